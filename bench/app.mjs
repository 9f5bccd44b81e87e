// `npm run bench:app`: the request path of a real app. An Express 5 app
// (bench/app-server.mjs) behind the relay-session stand-in, loaded over HTTP
// keep-alive from a process of its own (bench/app-load.mjs), with the stores
// in alternating runs, each on a fresh redis-server: this store, the 1.x
// adapter on ioredis with auto-pipelining, JSON text in a Map (the app with a
// store that does no I/O but hands out fresh objects) and the objects
// themselves in a Map ("zero": the app's own cost). Medians of the runs per
// cell, with the spread between runs; writes
// bench/results/app-latest.{md,json}.
//   APP_SIZES (1024,32768), APP_CLIENTS (1,8,32,128), APP_RUNS (3),
//   APP_MULTI (4x32: cells of 4 app processes behind one port, round-robin,
//   with 32 clients; the Redis stores only; '' for none),
//   APP_SECONDS (4, after 1 s of warm-up), APP_STORES (store,js-auto,map,zero;
//   also store-traced: with a tracing subscriber, store-cache and
//   store-nocache: this store with readCache true and false, store-users:
//   with userIdPath (users' indexes), and baseline:
//   the build
//   in APP_BASELINE, another built checkout of this package),
//   APP_SERVER (a key of harness/servers.mjs: redis-8.6, valkey-9.1, …;
//   default the redis-server on PATH or REDIS_SERVER_BIN)
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { findRedisServer, startRedis } from '../harness/redis-server.mjs'
import { median, spread } from './stats.mjs'
import { describeServer, useServer } from '../harness/servers.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const list = (name, fallback) => (process.env[name] ?? fallback).split(',')
const SIZES = list('APP_SIZES', '1024,32768').map(Number)
const CLIENTS = list('APP_CLIENTS', '1,8,32,128').map(Number)
const STORES = list('APP_STORES', 'store,js-auto,map,zero')
/** Cells with several app processes behind one port: `<processes>x<clients>` (APP_MULTI, '' for none); the stores without Redis sit them out (each process would have its own). */
const MULTI = list('APP_MULTI', '4x32').filter(Boolean).map((c) => c.split('x').map(Number))
const SHARED = (store) => store !== 'map' && store !== 'zero'
/** [processes, clients] of every cell of a size. */
const SHAPES = [...CLIENTS.map((c) => [1, c]), ...MULTI]
const RUNS = Number(process.env.APP_RUNS ?? 3)
const SECONDS = Number(process.env.APP_SECONDS ?? 4)
const WARMUP = 1
useServer(process.env.APP_SERVER)

/** Starts the app with `store`; resolves its process and port. */
function startApp(store, redisPort, size, processes) {
  const child = spawn(process.execPath, [path.join(here, 'app-server.mjs'), JSON.stringify({ store, redisPort, size, processes })], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the app exited with ${code}`)))
    createInterface({ input: child.stdout }).once('line', (line) => resolve({ child, port: Number(line) }))
  })
}

function runLoad(cfg) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, 'app-load.mjs'), JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`the load exited with ${code}`))))
  })
}

async function oneRun(store, size, clients, processes) {
  const redis = await startRedis()
  const app = await startApp(store, redis.port, size, processes)
  try {
    return await runLoad({ port: app.port, clients, warmup: WARMUP, seconds: SECONDS, serverPid: app.child.pid, redisPort: redis.port })
  } finally {
    app.child.removeAllListeners('exit')
    app.child.kill('SIGTERM')
    await new Promise((r) => (app.child.exitCode !== null ? r() : app.child.once('exit', r)))
    await redis.stop()
  }
}

const FIELDS = ['rps', 'p50', 'p99', 'cpu', 'main', 'addon', 'other', 'redis']

/** The stores a cell runs. */
const storesOf = (processes) => STORES.filter((s) => processes === 1 || SHARED(s))
const runs = []
const total = SIZES.length * RUNS * SHAPES.reduce((n, [processes]) => n + storesOf(processes).length, 0)
const t0 = Date.now()
for (const size of SIZES) {
  for (const [processes, clients] of SHAPES) {
    const stores = storesOf(processes)
    for (let run = 0; run < RUNS; run++) {
      // Alternate which store goes first, so that none always runs on a cooler machine.
      const order = stores.map((_, i) => stores[(i + run) % stores.length])
      for (const store of order) {
        const r = await oneRun(store, size, clients, processes)
        runs.push({ size, clients, processes, run, store, ...r })
        const secs = Math.round((Date.now() - t0) / 1000)
        console.error(
          `[${runs.length}/${total} ${secs}s] ${size / 1024} KB, ${clients} clients${processes > 1 ? ` on ${processes} processes` : ''}, run ${run + 1}, ${store}: ` +
            `${Math.round(r.rps)} req/s, p50 ${r.p50.toFixed(2)} ms, ${Math.round(r.cpu)} µs CPU/req, ${r.errors} errors, ${r.corruptCarts} corrupted carts`,
        )
      }
    }
  }
}

const cells = []
for (const size of SIZES) {
  for (const [processes, clients] of SHAPES) {
    const cell = { size, clients, processes, stores: {} }
    for (const store of storesOf(processes)) {
      const rs = runs.filter((r) => r.size === size && r.clients === clients && r.processes === processes && r.store === store)
      const m = Object.fromEntries(FIELDS.map((f) => [f, median(rs.map((r) => r[f]))]))
      m.spread = { rps: spread(rs.map((r) => r.rps)), cpu: spread(rs.map((r) => r.cpu)) }
      m.errors = rs.reduce((a, r) => a + r.errors, 0)
      m.corruptCarts = rs.reduce((a, r) => a + r.corruptCarts, 0)
      cell.stores[store] = m
    }
    cells.push(cell)
  }
}

const BASE = STORES.includes('baseline')
/** A store's req/s and CPU/req against the baseline's: medians of each round's own ratio, and their spread. */
function vsBaseline(cell, store) {
  const rounds = (field) => {
    const per = []
    for (let run = 0; run < RUNS; run++) {
      const find = (s) => runs.find((r) => r.size === cell.size && r.clients === cell.clients && r.processes === cell.processes && r.run === run && r.store === s)
      const [a, b] = [find(store), find('baseline')]
      if (a && b) per.push(a[field] / b[field])
    }
    const [lo, hi] = spread(per)
    return `${median(per).toFixed(2)}× (${lo.toFixed(2)}–${hi.toFixed(2)})`
  }
  return `${rounds('rps')}, ${rounds('cpu')}`
}

const f0 = (x) => Math.round(x).toLocaleString('en-US')
const ratio = (a, b) => (a !== undefined && b ? `${(a / b).toFixed(2)}×` : '–')
const lines = [
  `Machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'CPU'}, Node ${process.version}; ${describeServer(findRedisServer())} on loopback; ${RUNS} runs per cell, ${SECONDS} s each after ${WARMUP} s of warm-up; medians, spread min–max.`,
  'CPU of the app process per request, by thread: main, the addon\'s workers, and Node\'s other threads (V8\'s GC and compiler workers, libuv\'s pool).',
  '',
  `| size | clients | store | req/s (spread) | vs js-auto | p50 / p99 ms | CPU µs/req (spread) | vs js-auto | main / addon / other threads µs | Redis µs/req | errors | carts found corrupted |${BASE ? ' req/s, CPU/req vs baseline (per-round spread) |' : ''}`,
  `|---|---|---|---|---|---|---|---|---|---|---|---|${BASE ? '---|' : ''}`,
]
for (const c of cells) {
  const js = c.stores['js-auto']
  for (const store of storesOf(c.processes)) {
    const m = c.stores[store]
    lines.push(
      `| ${c.size / 1024} KB | ${c.clients}${c.processes > 1 ? ` on ${c.processes} processes` : ''} | ${store} | ${f0(m.rps)} (${f0(m.spread.rps[0])}–${f0(m.spread.rps[1])}) | ${store === 'js-auto' ? '' : ratio(m.rps, js?.rps)} | ` +
        `${m.p50.toFixed(2)} / ${m.p99.toFixed(2)} | ${f0(m.cpu)} (${f0(m.spread.cpu[0])}–${f0(m.spread.cpu[1])}) | ${store === 'js-auto' ? '' : ratio(m.cpu, js?.cpu)} | ` +
        `${f0(m.main)} / ${f0(m.addon)} / ${f0(m.other)} | ${SHARED(store) ? m.redis.toFixed(1) : '–'} | ${m.errors} | ${m.corruptCarts} |` +
        (BASE ? ` ${store.startsWith('store') ? vsBaseline(c, store) : ''} |` : ''),
    )
  }
}
// Where each store's Redis CPU goes (INFO commandstats): per request, the
// calls and µs of each command, means over the runs of a cell.
lines.push('', 'Redis commands per request (INFO commandstats; calls, µs), means over the runs:', '', '| size | clients | store | commands |', '|---|---|---|---|')
for (const c of cells) {
  for (const store of storesOf(c.processes).filter(SHARED)) {
    const rs = runs.filter((r) => r.size === c.size && r.clients === c.clients && r.processes === c.processes && r.store === store)
    const sum = {}
    for (const r of rs) {
      for (const [cmd, v] of Object.entries(r.commands ?? {})) {
        sum[cmd] ??= { calls: 0, usec: 0 }
        sum[cmd].calls += v.calls / rs.length
        sum[cmd].usec += v.usec / rs.length
      }
    }
    const shown = Object.entries(sum)
      .filter(([cmd, v]) => v.calls >= 0.01 && !/^(info|client\|setinfo|hello)$/.test(cmd))
      .sort((a, b) => b[1].usec - a[1].usec)
      .map(([cmd, v]) => `${cmd.replaceAll('|', '\\|')} ${v.calls.toFixed(2)}, ${v.usec.toFixed(2)}`)
    lines.push(`| ${c.size / 1024} KB | ${c.clients}${c.processes > 1 ? ` on ${c.processes} processes` : ''} | ${store} | ${shown.join('; ')} |`)
  }
}
const table = lines.join('\n')
const dir = path.join(here, 'results')
mkdirSync(dir, { recursive: true })
writeFileSync(path.join(dir, 'app-latest.md'), `${table}\n`)
writeFileSync(path.join(dir, 'app-latest.json'), `${JSON.stringify({ cells, runs }, null, 2)}\n`)
console.log(table)
