#!/usr/bin/env node
// `npm run test:fresh`: the README's first command on a fresh clone, as a bare
// machine sees it. Clones this repository into a temporary folder and runs
// `npm run demo` there with a PATH that holds every command of this one except
// the Redis and Valkey servers and CLIs: the clone must install its npm
// dependencies, build the addon and fetch a server into its own .servers/ by
// itself, and that server must start. As root (CI), it runs in a private
// mount namespace where every file of the packages that installing
// redis-server adds to a fresh Debian machine is masked (an empty file bound
// over each), so the libraries they brought (liblzf1, libjemalloc2) are gone
// too. The addon's crates are compiled into this checkout's target/
// (CARGO_TARGET_DIR), so the build reuses what `npm run build` compiled here.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const SERVER_COMMAND = /^(redis|valkey)-/
/**
 * What `apt-get install redis-server` adds to a fresh Debian 12 machine of
 * this project's kind (measured: the packages before and after), and
 * Valkey's packages where some are installed.
 */
const SERVER_PACKAGES = ['redis-server', 'redis-tools', 'liblzf1', 'libjemalloc2', 'valkey-server', 'valkey-tools']
const MASKED = 'RSR_FRESH_MASKED'

/** The regular files of the installed packages among SERVER_PACKAGES. */
function serverFiles() {
  const files = new Set()
  for (const pkg of SERVER_PACKAGES) {
    const list = spawnSync('dpkg-query', ['-L', pkg], { encoding: 'utf8' })
    if (list.status !== 0) continue
    for (const f of list.stdout.split('\n')) {
      try {
        const real = realpathSync(f)
        if (statSync(real).isFile()) files.add(real)
      } catch {}
    }
  }
  return [...files]
}

if (!process.env[MASKED]) {
  const files = serverFiles()
  const root_ = process.getuid?.() === 0
  if (files.length > 0 && root_ && spawnSync('sh', ['-c', 'command -v unshare']).status === 0) {
    // Again, in a mount namespace of its own with those files masked.
    const mask = 'node=$1 script=$2; shift 2; for f do mount --bind /dev/null "$f" || exit 1; done; exec "$node" "$script"'
    const run = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', mask, 'sh', process.execPath, fileURLToPath(import.meta.url), ...files], {
      stdio: 'inherit',
      env: { ...process.env, [MASKED]: String(files.length) },
    })
    process.exit(run.status ?? 1)
  }
  if (files.length > 0) {
    console.error(`fresh clone: ${files.length} files of ${SERVER_PACKAGES.join(', ')} are installed and stay visible (masking them needs root and unshare): this run does not prove a bare machine`)
  }
} else {
  // The mask holds: what redis-server brought reads as empty.
  const lib = serverFiles().find((f) => f.includes('/lib'))
  if (lib && readFileSync(lib).length !== 0) throw new Error(`the mask did not hold: ${lib} is readable`)
}

const work = mkdtempSync(path.join(tmpdir(), 'rsr-fresh-'))

/** A bin folder with every command on PATH but the servers' own. */
function pathWithoutServers() {
  const bin = path.join(work, 'bin')
  mkdirSync(bin)
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir || !existsSync(dir)) continue
    for (const name of readdirSync(dir)) {
      const target = path.join(dir, name)
      if (SERVER_COMMAND.test(name) || existsSync(path.join(bin, name))) continue
      try {
        if (statSync(target).isFile()) symlinkSync(target, path.join(bin, name))
      } catch {}
    }
  }
  return bin
}

let failed = false
try {
  const clone = path.join(work, 'clone')
  execFileSync('git', ['clone', '--quiet', root, clone])
  const bin = pathWithoutServers()
  const env = { ...process.env, PATH: bin, CARGO_TARGET_DIR: path.join(root, 'target') }
  for (const name of ['REDIS_URL', 'REDIS_SERVER_BIN', 'REDIS_CLI_BIN']) delete env[name]
  if (spawnSync('sh', ['-c', 'command -v redis-server || command -v valkey-server'], { env }).status === 0) {
    throw new Error('the PATH for the clone still finds a server')
  }
  const t0 = Date.now()
  // The time to the first session: when the demo prints its first step.
  let first = 0
  const demo = await new Promise((resolve) => {
    const child = spawn('npm', ['run', 'demo'], { cwd: clone, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => {
      stdout += d
      if (!first && stdout.includes('## 1.')) first = Date.now() - t0
    })
    child.stderr.on('data', (d) => (stderr += d))
    child.on('close', (status) => resolve({ status, stdout, stderr }))
  })
  const secs = ((Date.now() - t0) / 1000).toFixed(0)
  const masked = process.env[MASKED] ? `, with the ${process.env[MASKED]} files of ${SERVER_PACKAGES.join(', ')} masked` : ''
  const out = `${demo.stdout}${demo.stderr}`
  const servers = existsSync(path.join(clone, '.servers')) ? readdirSync(path.join(clone, '.servers')) : []
  if (demo.status !== 0 || !out.includes('## 6. destroy()') || servers.length === 0) {
    failed = true
    console.error(out)
    console.error(`fresh clone: npm run demo exited ${demo.status} after ${secs} s; fetched servers: ${servers.join(', ') || 'none'}`)
  } else {
    console.log(`fresh clone: npm run demo passed in ${secs} s (first session after ${(first / 1000).toFixed(0)} s) without a server on PATH${masked} (it installed the npm dependencies, built the addon and fetched ${servers.join(', ')} into .servers/)`)
  }
} finally {
  rmSync(work, { recursive: true, force: true })
}
process.exit(failed ? 1 : 0)
