#!/usr/bin/env node
// `npm run test:runtimes`: a store round trip with a merge, a lock and
// stats() (harness/smoke.mjs) under Bun and Deno, which load napi addons: Bun natively, Deno
// through `node:module`'s createRequire with --allow-all (ffi). Both come from
// the npm registry, installed once into .runtimes/runtimes/ (tools.mjs). Prints a table; exits 1 on a failure.
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startRedis } from '../harness/redis-server.mjs'
import { npmToolOnce, RUNTIME_VERSIONS } from '../harness/tools.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const { bun, deno } = RUNTIME_VERSIONS
const bin = (name) => npmToolOnce('runtimes', name, { bun, deno })

const smoke = path.join(root, 'harness', 'smoke.mjs')
const RUNTIMES = {
  Node: [process.execPath, smoke],
  Bun: [bin('bun'), smoke],
  Deno: [bin('deno'), 'run', '--allow-all', smoke],
}
const server = await startRedis()
const rows = []
let failed = false
try {
  for (const [name, [cmd, ...args]] of Object.entries(RUNTIMES)) {
    const version = spawnSync(cmd, ['--version'], { encoding: 'utf8' }).stdout.trim().split('\n')[0]
    const r = spawnSync(cmd, args, {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, STORE_PATH: path.join(root, 'store.js'), REDIS_URL: server.url, NO_COLOR: '1' },
    })
    let ok = false
    try {
      const out = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '')
      ok = r.status === 0 && out.ok === true
    } catch {}
    if (!ok) {
      failed = true
      console.error(`${name}: exit ${r.status}\n${r.stdout}${r.stderr}`)
    }
    rows.push(`| ${name} | ${version} | ${ok ? 'pass' : 'FAIL'} |`)
  }
} finally {
  await server.stop()
}
console.log(['| runtime | version | round trip, merge, lock, stats (harness/smoke.mjs) |', '|---|---|---|', ...rows].join('\n'))
process.exit(failed ? 1 : 0)
