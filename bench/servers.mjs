// npm run bench:servers: the merge, set and lock+unlock cells of npm run bench
// (64 in flight, 1 KB and 32 KB) on several servers, this store and the 1.x
// adapter on each, side by side: where the server has native compare-and-set
// and compare-and-delete (Redis >= 8.4, Valkey >= 8.1 / 9.0) and where the
// store runs Lua. Writes bench/results/server-<key>.json per server and
// bench/results/servers.md, and prints the table.
//   node bench/servers.mjs [key …]   servers of harness/servers.mjs (default
//                                    redis-7.0 redis-8.6 valkey-9.1)
//   --report-only                    the table from the saved results
//   BENCH_RUNS, BENCH_SECONDS as for npm run bench
import { spawnSync } from 'node:child_process'
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { median } from './stats.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const results = path.join(here, 'results')
const args = process.argv.slice(2)
const reportOnly = args.includes('--report-only')
const keys = args.filter((a) => !a.startsWith('--'))
const servers = keys.length ? keys : ['redis-7.0', 'redis-8.6', 'valkey-9.1']

if (!reportOnly) {
  for (const key of servers) {
    console.error(`\n== ${key}`)
    const r = spawnSync(process.execPath, [path.join(here, 'run.mjs')], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, BENCH_SERVER: key, BENCH_OPS: 'set,merge,lock', BENCH_SIZES: '1024,32768', BENCH_INFLIGHT: '64', BENCH_LONE: '' },
    })
    if (r.status !== 0) throw new Error(`bench on ${key} failed`)
    copyFileSync(path.join(results, 'latest.json'), path.join(results, `server-${key}.json`))
  }
}

const n0 = (x) => Math.round(x).toLocaleString('en-US')
const n1 = (x) => (x >= 100 ? Math.round(x).toString() : x.toFixed(1))
const ratio = (x) => `${x.toFixed(2)}×`
const lines = [
  '| server | cell | ops/s store | ops/s 1.x | ratio (spread) | Redis CPU/call store | Redis CPU/call 1.x | store ÷ 1.x | store merge ÷ store set |',
  '|---|---|---|---|---|---|---|---|---|',
]
for (const key of servers) {
  const saved = JSON.parse(readFileSync(path.join(results, `server-${key}.json`), 'utf8'))
  const server = saved.machine.redis ?? key
  const cell = (op, size) => saved.summaries.find((s) => s.op === op && s.size === size && s.inflight === 64)
  for (const [op, size, name] of [
    ['set', 1024, 'set 1 KB'],
    ['merge', 1024, 'merge 1 KB'],
    ['set', 32768, 'set 32 KB'],
    ['merge', 32768, 'merge 32 KB'],
    ['lock', 1024, 'lock+unlock'],
  ]) {
    const c = cell(op, size)
    if (!c) continue
    const spread = `${ratio(Math.min(...c.vsAuto))}–${ratio(Math.max(...c.vsAuto))}`
    const perSet = op === 'merge' ? ratio(c.store.redisUsPerCall / cell('set', size).store.redisUsPerCall) : ''
    lines.push(
      `| ${server} | ${name} | ${n0(c.store.opsPerSec)} | ${n0(c.auto.opsPerSec)} | **${ratio(median(c.vsAuto))}** (${spread}) | ` +
        `${n1(c.store.redisUsPerCall)} µs | ${n1(c.auto.redisUsPerCall)} µs | ${ratio(c.store.redisUsPerCall / c.auto.redisUsPerCall)} | ${perSet} |`,
    )
  }
}
const first = JSON.parse(readFileSync(path.join(results, `server-${servers[0]}.json`), 'utf8'))
const report = `${lines.join('\n')}\n\n1.x: the adapter written from its contract on ioredis 5 with auto-pipelining. ` +
  `64 calls in flight, ${first.runs} runs per cell of ${first.seconds} s, medians (the ratio: of the runs' own ratios, with their lowest and highest). ` +
  'Redis CPU: the server\'s INFO cpu (user + sys) over the measured seconds, per call.\n'
writeFileSync(path.join(results, 'servers.md'), report)
console.log(report)
