#!/usr/bin/env node
// `npm run test:fresh`: the README's first command on a fresh clone. Clones
// this repository into a temporary folder and runs `npm run demo` there with
// a PATH that holds every command of this one except the Redis and Valkey
// servers and CLIs: the clone must install its npm dependencies, build the
// addon and fetch a server into its own .servers/ by itself. The addon's
// crates are compiled into this checkout's target/ (CARGO_TARGET_DIR), so
// the build reuses what `npm run build` compiled here.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const work = mkdtempSync(path.join(tmpdir(), 'rsr-fresh-'))
const SERVER_COMMAND = /^(redis|valkey)-/

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
  const demo = spawnSync('npm', ['run', 'demo'], { cwd: clone, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  const secs = ((Date.now() - t0) / 1000).toFixed(0)
  const out = `${demo.stdout}${demo.stderr}`
  const servers = existsSync(path.join(clone, '.servers')) ? readdirSync(path.join(clone, '.servers')) : []
  if (demo.status !== 0 || !out.includes('## 6. destroy()') || servers.length === 0) {
    failed = true
    console.error(out)
    console.error(`fresh clone: npm run demo exited ${demo.status} after ${secs} s; fetched servers: ${servers.join(', ') || 'none'}`)
  } else {
    console.log(`fresh clone: npm run demo passed in ${secs} s without a server on PATH (it installed the npm dependencies, built the addon and fetched ${servers.join(', ')} into .servers/)`)
  }
} finally {
  rmSync(work, { recursive: true, force: true })
}
process.exit(failed ? 1 : 0)
