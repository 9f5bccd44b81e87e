// npm run bench: this store against the 1.x JavaScript adapter (ioredis 5 with
// and without auto-pipelining) on one fresh redis-server, one Node process per
// cell, implementations alternating; then redis-benchmark's ceiling for the
// same commands. Writes bench/results/latest.{md,json} and prints the table.
//   BENCH_SECONDS (default 3) measured seconds per cell, after 1 s of warm-up
//   BENCH_OPS, BENCH_SIZES, BENCH_INFLIGHT: comma lists to run a subset
//   BENCH_LONE: loops of the lone-call cell (gets one per macrotask), '' for none
import { execFile, execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { findRedisServer, startRedis } from '../__test__/support/redis-server.mjs'
import { makeSession } from './sessions.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const list = (name, fallback) => (process.env[name] ? process.env[name].split(',') : fallback)
const OPS = list('BENCH_OPS', ['get', 'set', 'merge', 'lock'])
const SIZES = list('BENCH_SIZES', ['1024', '32768']).map(Number)
const INFLIGHT = list('BENCH_INFLIGHT', ['1', '64', '512']).map(Number)
const IMPLS = ['native', 'js-auto', 'js-plain']
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3)
const WARMUP = 1

const server = await startRedis()
const results = []
// The lone-call cell: gets issued one per macrotask, 1 KB, at BENCH_LONE loops.
const LONE = (process.env.BENCH_LONE ?? '1,8,64').split(',').filter(Boolean).map(Number)
const cells = [
  ...OPS.flatMap((op) => SIZES.flatMap((size) => INFLIGHT.map((inflight) => ({ op, size, inflight })))),
  ...LONE.map((inflight) => ({ op: 'lone', size: 1024, inflight })),
]
const total = cells.length * IMPLS.length
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
  for (const [k, cell] of cells.entries()) {
    // Rotate the order so no implementation always runs first.
    const order = IMPLS.map((_, i) => IMPLS[(i + k) % IMPLS.length])
    for (const impl of order) {
      const elapsed = ((Date.now() - t0) / 1000).toFixed(0)
      process.stderr.write(`\r[${++done}/${total}] ${cell.op} ${cell.size / 1024} KB, ${cell.inflight} in flight: ${impl}      (${elapsed} s)   `)
      results.push(await runCell({ impl, ...cell, seconds: SECONDS, warmup: WARMUP, port: server.port }))
    }
  }
  process.stderr.write('\rredis-benchmark ceiling…' + ' '.repeat(60))
  const ceilings = await ceiling(server.port, cells)
  process.stderr.write('\r' + ' '.repeat(80) + '\r')
  const report = makeReport(results, ceilings)
  mkdirSync(path.join(here, 'results'), { recursive: true })
  writeFileSync(path.join(here, 'results', 'latest.json'), JSON.stringify({ machine: machine(), seconds: SECONDS, results, ceilings }, null, 2))
  writeFileSync(path.join(here, 'results', 'latest.md'), report)
  console.log(report)
  console.log(`(${((Date.now() - t0) / 1000).toFixed(0)} s; bench/results/latest.md and latest.json)`)
} finally {
  await server.stop()
}

function machine() {
  const version = execFileSync(findRedisServer(), ['--version'], { encoding: 'utf8' })
  return {
    cpus: `${os.cpus().length} × ${os.cpus()[0]?.model.trim()}`,
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    node: process.version,
    redis: /v=([\d.]+)/.exec(version)?.[1] ?? 'unknown',
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
      merge: [['GET', 'sess:ceiling'], ['EVALSHA', swapSha, '1', 'sess:ceiling', text, text, '86400000']],
      lock: [['SET', 'sess:lock:ceiling', 'token', 'NX', 'PX', '5000'], ['EVALSHA', unlockSha, '1', 'sess:lock:ceiling', 'other']],
    }
    for (const { op, inflight } of cells.filter((c) => c.size === size)) {
      const rates = []
      for (const cmd of commands[op]) {
        const n = Math.max(2000, Math.min(200_000, Math.round((inflight === 1 ? 20_000 : 400_000) * (1024 / size) ** 0.5)))
        const args = ['-p', String(port), '-c', '1', '-P', String(inflight), '-n', String(n), '--csv', ...cmd]
        const { stdout } = await promisify(execFile)(bin, args, { maxBuffer: 1 << 20 })
        // The first column quotes the command, commas and all: read from the end.
        const row = stdout.trim().split('\n').pop().split(',').map((v) => v.replace(/"/g, ''))
        rates.push(Number(row[row.length - 7]))
      }
      out[`${op}/${size}/${inflight}`] = 1 / rates.reduce((a, r) => a + 1 / r, 0)
    }
  }
  admin.disconnect()
  return out
}

function makeReport(results, ceilings) {
  const get = (impl, c) => results.find((r) => r.impl === impl && r.op === c.op && r.size === c.size && r.inflight === c.inflight)
  const f0 = (x) => (x >= 100 ? Math.round(x).toLocaleString('en') : x.toFixed(1))
  const ratio = (a, b) => (b > 0 ? `${(a / b).toFixed(2)}×` : '–')
  const ms = (x) => (x < 1 ? `${Math.round(x * 1000)} µs` : `${x.toFixed(1)} ms`)
  const names = { get: 'get', set: 'set', merge: 'merge', lock: 'lock+unlock', lone: 'get, one per macrotask' }
  const lines = [
    '| call | size | in flight | ops/s store | ops/s ioredis auto | ratio | ops/s ioredis plain | ratio | p50 store / auto | p99 store / auto | main-thread CPU/call store / auto | process CPU/call store / auto | Redis CPU/call store / auto | redis-benchmark ceiling |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for (const c of cells) {
    const n = get('native', c)
    const a = get('js-auto', c)
    const p = get('js-plain', c)
    const ceil = ceilings[`${c.op}/${c.size}/${c.inflight}`]
    lines.push(
      `| ${names[c.op]} | ${c.size / 1024} KB | ${c.inflight} | ${f0(n.opsPerSec)} | ${f0(a.opsPerSec)} | **${ratio(n.opsPerSec, a.opsPerSec)}** | ${f0(p.opsPerSec)} | ${ratio(n.opsPerSec, p.opsPerSec)} | ${ms(n.p50Ms)} / ${ms(a.p50Ms)} | ${ms(n.p99Ms)} / ${ms(a.p99Ms)} | ${n.mainUsPerCall.toFixed(1)} / ${a.mainUsPerCall.toFixed(1)} µs (${ratio(n.mainUsPerCall, a.mainUsPerCall)}) | ${n.procUsPerCall.toFixed(1)} / ${a.procUsPerCall.toFixed(1)} µs | ${n.redisUsPerCall.toFixed(1)} / ${a.redisUsPerCall.toFixed(1)} µs | ${ceil ? f0(ceil) : '–'} |`,
    )
  }
  const m = machine()
  return [
    `Machine: ${m.cpus}, ${m.memory}, Node ${m.node}; one redis-server ${m.redis} on loopback, persistence off; ${SECONDS} s per cell after 1 s of warm-up.`,
    '',
    ...lines,
    '',
  ].join('\n')
}
