#!/usr/bin/env node
// `npm run build:release`: the binary of npm/linux-x64-gnu/, built against a
// glibc 2.17 baseline (what RHEL 7, Amazon Linux 2 and Debian 9 and later
// ship) with cargo-zigbuild and zig, so that it loads where a binary linked
// against this machine's glibc would fail with "GLIBC_2.34 not found". zig
// comes from PyPI's ziglang wheel (pip download), cargo-zigbuild from
// the crates registry (cargo install), both once into .toolchains/; nothing is
// installed system-wide. Then checks with `objdump -T` that no symbol needs
// a glibc newer than 2.17.
import { execFileSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { unpackWheel } from '../harness/tools.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const tools = path.join(root, '.toolchains')
const ZIG = '0.17.1'
const ZIGBUILD = '0.24.1'
/** The newest glibc the binary may need. */
export const GLIBC_BASELINE = '2.17'
const TARGET = 'x86_64-unknown-linux-gnu'
const BINARY = 'relay-session-redis.linux-x64-gnu.node'

/** The newest GLIBC_x.y version a binary's dynamic symbols name. */
export function newestGlibc(file) {
  const symbols = execFileSync('objdump', ['-T', file], { encoding: 'utf8', maxBuffer: 64 << 20 })
  const versions = [...symbols.matchAll(/GLIBC_(\d+)\.(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])])
  versions.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  const [major, minor] = versions.at(-1) ?? [0, 0]
  return `${major}.${minor}`
}

const newer = (a, b) => {
  const [x, y] = [a, b].map((v) => v.split('.').map(Number))
  return x[0] > y[0] || (x[0] === y[0] && x[1] > y[1])
}

function zigDir() {
  const dir = path.join(tools, `zig-${ZIG}`)
  if (existsSync(path.join(dir, 'ziglang', 'zig'))) return path.join(dir, 'ziglang')
  const work = mkdtempSync(path.join(tmpdir(), 'rsr-zig-'))
  try {
    unpackWheel(`ziglang==${ZIG}`, work, dir)
    execFileSync('chmod', ['+x', path.join(dir, 'ziglang', 'zig')])
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
  return path.join(dir, 'ziglang')
}

function zigbuildDir() {
  const bin = path.join(tools, 'bin')
  if (!existsSync(path.join(bin, 'cargo-zigbuild'))) {
    console.error(`installing cargo-zigbuild ${ZIGBUILD} into .toolchains/ (about 2 minutes, once)`)
    execFileSync('cargo', ['install', '--quiet', '--locked', '--version', ZIGBUILD, '--root', tools, 'cargo-zigbuild'], { stdio: 'inherit' })
  }
  return bin
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const PATH = [zigbuildDir(), zigDir(), process.env.PATH].join(path.delimiter)
  const out = mkdtempSync(path.join(tmpdir(), 'rsr-release-'))
  try {
    const napi = path.join(root, 'node_modules', '.bin', 'napi')
    execFileSync(napi, ['build', '--platform', '--release', '--no-const-enum', '-x', '--target', `${TARGET}.${GLIBC_BASELINE}`, '--output-dir', out], {
      cwd: root,
      stdio: 'inherit',
      env: { ...process.env, PATH },
    })
    const built = path.join(out, BINARY)
    const glibc = newestGlibc(built)
    if (newer(glibc, GLIBC_BASELINE)) throw new Error(`${BINARY} needs GLIBC_${glibc}, newer than the ${GLIBC_BASELINE} baseline`)
    copyFileSync(built, path.join(root, 'npm', 'linux-x64-gnu', BINARY))
    console.log(`npm/linux-x64-gnu/${BINARY}: newest glibc symbol GLIBC_${glibc} (baseline ${GLIBC_BASELINE})`)
  } finally {
    rmSync(out, { recursive: true, force: true })
  }
}
