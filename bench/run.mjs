// npm run bench: this store against the 1.x JavaScript adapter (ioredis 5 with
// and without auto-pipelining) on one fresh redis-server, one Node process per
// cell, implementations alternating, every cell run BENCH_RUNS times (rounds
// over all cells, so drift of the machine spreads over every cell); medians
// with the spread between runs; then redis-benchmark's ceiling for the same
// commands. Writes bench/results/latest.{md,json} and prints the table.
//   BENCH_RUNS (default 3) runs per cell
//   BENCH_SECONDS (default 2) measured seconds per cell, after 1 s of warm-up
//   BENCH_OPS, BENCH_SIZES, BENCH_INFLIGHT: comma lists to run a subset
//   BENCH_LONE: loops of the lone-call cell (gets one per macrotask), '' for none
//   BENCH_BASELINE: another built checkout of this package, run as a fourth
//     implementation in the same rounds (before/after a change)
//   BENCH_SERVER: the server to run on, a key of harness/servers.mjs
//     (redis-8.6, valkey-9.1, …; built first if need be); default the
//     redis-server on PATH (or REDIS_SERVER_BIN)
import { execFile, spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { findRedisServer, startRedis } from '../harness/redis-server.mjs'
import { makeSession } from './sessions.mjs'
import { median, spread } from './stats.mjs'
import { describeServer, useServer } from '../harness/servers.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const list = (name, fallback) => (process.env[name] ? process.env[name].split(',') : fallback)
const OPS = list('BENCH_OPS', ['get', 'set', 'merge', 'lock'])
const SIZES = list('BENCH_SIZES', ['1024', '32768']).map(Number)
const INFLIGHT = list('BENCH_INFLIGHT', ['1', '64', '512']).map(Number)
const BASELINE = process.env.BENCH_BASELINE ? path.resolve(process.env.BENCH_BASELINE) : null
const IMPLS = ['store', 'js-auto', 'js-plain', ...(BASELINE ? ['baseline'] : [])]
const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2)
const WARMUP = 1

useServer(process.env.BENCH_SERVER)
const server = await startRedis()
const results = []
// The lone-call cell: gets issued one per macrotask, 1 KB, at BENCH_LONE loops.
const LONE = (process.env.BENCH_LONE ?? '1,8,64').split(',').filter(Boolean).map(Number)
const cells = [
  ...OPS.flatMap((op) => SIZES.flatMap((size) => INFLIGHT.map((inflight) => ({ op, size, inflight })))),
  ...LONE.map((inflight) => ({ op: 'lone', size: 1024, inflight })),
]
const total = RUNS * cells.length * IMPLS.length
let done = 0
const t0 = Date.now()

function runCell(cfg) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, 'cell.mjs'), JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`cell ${JSON.stringify(cfg)} exited with ${code}`))))
  })
}

try {
  for (let run = 0; run < RUNS; run++) {
    for (const [k, cell] of cells.entries()) {
      // Rotate the order so no implementation always runs first.
      const order = IMPLS.map((_, i) => IMPLS[(i + k + run) % IMPLS.length])
      for (const impl of order) {
        const elapsed = ((Date.now() - t0) / 1000).toFixed(0)
        process.stderr.write(`\r[${++done}/${total}] run ${run + 1}: ${cell.op} ${cell.size / 1024} KB, ${cell.inflight} in flight: ${impl}      (${elapsed} s)   `)
        const cfg = { impl, ...cell, seconds: SECONDS, warmup: WARMUP, port: server.port, ...(impl === 'baseline' ? { baseline: BASELINE } : {}) }
        results.push({ run, ...(await runCell(cfg)) })
      }
    }
  }
  process.stderr.write('\rredis-benchmark ceiling…' + ' '.repeat(60))
  const ceilings = await ceiling(server.port, cells)
  process.stderr.write('\r' + ' '.repeat(80) + '\r')
  const { markdown: report, summaries } = makeReport(results, ceilings)
  mkdirSync(path.join(here, 'results'), { recursive: true })
  writeFileSync(path.join(here, 'results', 'latest.json'), JSON.stringify({ machine: machine(), runs: RUNS, seconds: SECONDS, baseline: BASELINE, summaries, results, ceilings }, null, 2))
  writeFileSync(path.join(here, 'results', 'latest.md'), report)
  console.log(report)
  console.log(`(${((Date.now() - t0) / 1000).toFixed(0)} s; bench/results/latest.md and latest.json)`)
} finally {
  await server.stop()
}

function machine() {
  return {
    cpus: `${os.cpus().length} × ${os.cpus()[0]?.model.trim()}`,
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    node: process.version,
    redis: describeServer(findRedisServer()),
  }
}

/**
 * redis-benchmark on one connection with the cell's calls in flight as its
 * pipeline depth, running the commands the store sends for one call: GET; SET
 * … PX; for merge GET and the compare-and-set script; for lock+unlock SET … NX
 * PX and the unlock script. Two commands per call combine as 1/(1/a + 1/b).
 */
async function ceiling(port, cells) {
  const bin = path.join(path.dirname(findRedisServer()), 'redis-benchmark')
  if (!existsSync(bin)) return {}
  const admin = new Redis({ host: '127.0.0.1', port })
  const lua = (name) => readFileSync(path.join(here, '..', 'lua', name), 'utf8')
  const swapSha = await admin.script('LOAD', lua('swap.lua'))
  const unlockSha = await admin.script('LOAD', lua('unlock.lua'))
  const out = {}
  for (const size of SIZES) {
    const text = JSON.stringify(makeSession('ceiling'.padEnd(64, '0'), size))
    await admin.set('sess:ceiling', text)
    const commands = {
      get: [['GET', 'sess:ceiling']],
      lone: [['GET', 'sess:ceiling']],
      set: [['SET', 'sess:ceiling', text, 'PX', '86400000']],
      merge: [['GET', 'sess:ceiling'], ['EVALSHA', swapSha, '1', 'sess:ceiling', text, text, '86400000', 'PX']],
      lock: [['SET', 'sess:lock:ceiling', 'token', 'NX', 'PX', '5000'], ['EVALSHA', unlockSha, '1', 'sess:lock:ceiling', 'other']],
    }
    for (const { op, inflight } of cells.filter((c) => c.size === size)) {
      const rates = []
      for (const cmd of commands[op]) {
        const n = Math.max(2000, Math.min(200_000, Math.round((inflight === 1 ? 20_000 : 400_000) * (1024 / size) ** 0.5)))
        const args = ['-p', String(port), '-c', '1', '-P', String(inflight), '-n', String(n), '--csv', ...cmd]
        // A ceiling redis-benchmark cannot measure (it gives up on some deep
        // pipelines of large values: "All clients disconnected") is left
        // out; the cells measured before it are never lost for it.
        const ran = await promisify(execFile)(bin, args, { maxBuffer: 1 << 20 }).catch(() => null)
        if (!ran) break
        // The first column quotes the command, commas and all: read from the end.
        const row = ran.stdout.trim().split('\n').pop().split(',').map((v) => v.replace(/"/g, ''))
        rates.push(Number(row[row.length - 7]))
      }
      if (rates.length === commands[op].length) out[`${op}/${size}/${inflight}`] = 1 / rates.reduce((a, r) => a + 1 / r, 0)
    }
  }
  admin.disconnect()
  return out
}

/** Medians over the runs of a cell, with the spread of ops/s and of the ratios. */
function makeReport(results, ceilings) {
  const runsOf = (impl, c) => results.filter((r) => r.impl === impl && r.op === c.op && r.size === c.size && r.inflight === c.inflight)
  const FIELDS = ['opsPerSec', 'p50Ms', 'p99Ms', 'mainUsPerCall', 'procUsPerCall', 'redisUsPerCall']
  const summary = (rs) => ({ ...Object.fromEntries(FIELDS.map((f) => [f, median(rs.map((r) => r[f]))])), ops: spread(rs.map((r) => r.opsPerSec)) })
  // A ratio's spread is over the runs' own ratios (run r of each implementation ran in the same round).
  const ratios = (as, bs) => as.map((a, i) => a.opsPerSec / bs[i]?.opsPerSec).filter(Number.isFinite)
  const f0 = (x) => (x >= 100 ? Math.round(x).toLocaleString('en') : x.toFixed(1))
  const x2 = (x) => `${x.toFixed(2)}×`
  const ratioCell = (rs) => (rs.length ? `**${x2(median(rs))}**${rs.length > 1 ? ` (${spread(rs).map(x2).join('–')})` : ''}` : '–')
  const opsCell = (m) => `${f0(m.opsPerSec)}${RUNS > 1 ? ` (${m.ops.map(f0).join('–')})` : ''}`
  const ratio = (a, b) => (b > 0 ? x2(a / b) : '–')
  const ms = (x) => (x < 1 ? `${Math.round(x * 1000)} µs` : `${x.toFixed(1)} ms`)
  const names = { get: 'get', set: 'set', merge: 'merge', lock: 'lock+unlock', lone: 'get, one per macrotask' }
  const base = BASELINE ? ' | ops/s baseline | store / baseline' : ''
  const lines = [
    `| call | size | in flight | ops/s store | ops/s ioredis auto | ratio | ops/s ioredis plain | ratio${base} | p50 store / auto | p99 store / auto | main-thread CPU/call store / auto | process CPU/call store / auto | Redis CPU/call store / auto | redis-benchmark ceiling |`,
    `|---|---|---|---|---|---|---|---|${BASELINE ? '---|---|' : ''}---|---|---|---|---|---|`,
  ]
  const summaries = []
  for (const c of cells) {
    const [nr, ar, pr, br] = ['store', 'js-auto', 'js-plain', 'baseline'].map((impl) => runsOf(impl, c))
    const [n, a, p] = [nr, ar, pr].map(summary)
    const b = br.length ? summary(br) : null
    const row = { ...c, store: n, auto: a, plain: p, baseline: b, vsAuto: ratios(nr, ar), vsPlain: ratios(nr, pr), vsBaseline: ratios(nr, br) }
    summaries.push(row)
    const ceil = ceilings[`${c.op}/${c.size}/${c.inflight}`]
    const baseCells = BASELINE ? ` | ${b ? opsCell(b) : '–'} | ${ratioCell(row.vsBaseline)}` : ''
    lines.push(
      `| ${names[c.op]} | ${c.size / 1024} KB | ${c.inflight} | ${opsCell(n)} | ${opsCell(a)} | ${ratioCell(row.vsAuto)} | ${f0(p.opsPerSec)} | ${x2(median(row.vsPlain))}${baseCells} | ${ms(n.p50Ms)} / ${ms(a.p50Ms)} | ${ms(n.p99Ms)} / ${ms(a.p99Ms)} | ${n.mainUsPerCall.toFixed(1)} / ${a.mainUsPerCall.toFixed(1)} µs (${ratio(n.mainUsPerCall, a.mainUsPerCall)}) | ${n.procUsPerCall.toFixed(1)} / ${a.procUsPerCall.toFixed(1)} µs (${ratio(n.procUsPerCall, a.procUsPerCall)}) | ${n.redisUsPerCall.toFixed(1)} / ${a.redisUsPerCall.toFixed(1)} µs | ${ceil ? f0(ceil) : '–'} |`,
    )
  }
  const m = machine()
  const markdown = [
    `Machine: ${m.cpus}, ${m.memory}, Node ${m.node}; one ${m.redis} server on loopback, persistence off; ${RUNS} run${RUNS > 1 ? 's' : ''} per cell of ${SECONDS} s after 1 s of warm-up; medians${RUNS > 1 ? ', spread between runs in brackets' : ''}.`,
    '',
    ...lines,
    '',
  ].join('\n')
  return { markdown, summaries }
}
