// One benchmark cell in a process of its own:
//   node bench/cell.mjs '{"impl":"store","op":"get","size":1024,"inflight":64,"seconds":3,"warmup":1,"port":6379}'
// impl: store (this checkout), baseline (the built checkout at cfg.baseline),
// js-auto or js-plain (the 1.x adapter on ioredis, with or without
// auto-pipelining). Keeps `inflight` calls going for `warmup` then `seconds` seconds and prints one
// JSON line: ops/s, p50/p99 latency, Node main-thread CPU per call (event-loop
// utilisation), process CPU per call (every thread), Redis CPU per call (INFO cpu).
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { redisCpuSeconds } from './redis-cpu.mjs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { createRedisSessionStore } from 'relay-session-redis'
import { createJsAdapter } from '../harness/js-adapter.mjs'
import { makeSession, mergePaths } from './sessions.mjs'

const cfg = JSON.parse(process.argv[2])
const { impl, op, size, inflight, seconds, warmup, port } = cfg
const url = `redis://127.0.0.1:${port}`
const TTL = 86_400_000
// Worker w uses sessions w, w + inflight, w + 2 * inflight, … of the pool: no
// two calls in flight touch one session, as with concurrent requests of
// different users.
const POOL = Math.max(256, 2 * inflight)

let store
let client
if (impl === 'store') {
  store = createRedisSessionStore({ url, commandTimeout: 10_000 })
} else if (impl === 'baseline') {
  // Another built checkout of this package (BENCH_BASELINE), for before/after.
  const other = createRequire(import.meta.url)(path.join(cfg.baseline, 'store.js'))
  store = other.createRedisSessionStore({ url, commandTimeout: 10_000 })
} else {
  client = new Redis({ host: '127.0.0.1', port, enableAutoPipelining: impl === 'js-auto', maxRetriesPerRequest: 1 })
  store = createJsAdapter(client)
}
const admin = new Redis({ host: '127.0.0.1', port })

const prefix = `b${process.pid}-`
const ids = Array.from({ length: POOL }, (_, i) => `${prefix}${i}`.padEnd(64, '0'))
const sessions = ids.map((id) => makeSession(id, size))
// Sessions are written by the raw client so every implementation starts from
// the same text (JSON.stringify's).
await Promise.all(ids.map((id, i) => admin.set(`sess:${id}`, JSON.stringify(sessions[i]), 'PX', TTL)))

const ops = {
  get: (i) => store.get(ids[i % POOL]),
  // As an app calls the store: each call from a macrotask of its own (a
  // request's socket read), so no two calls share a tick, and each crosses
  // into Rust alone.
  lone: async (i) => {
    await new Promise(setImmediate)
    return store.get(ids[i % POOL])
  },
  set: (i) => store.set(ids[i % POOL], sessions[i % POOL], TTL),
  merge: (i) => store.merge(ids[i % POOL], mergePaths(i), TTL),
  // lock+unlock on an id of the worker's own: no contention, two calls.
  lock: async (i, w) => {
    const id = `${prefix}lock-${w}`
    if (!(await store.lock(id, 5000))) throw new Error('lock not taken')
    await store.unlock(id)
  },
}
const run = ops[op]

const redisCpu = () => redisCpuSeconds(admin)

let stop = false
let measuring = false
let count = 0
const lat = new Float64Array(4_000_000)
let n = 0
async function worker(w) {
  for (let i = w; !stop; i += inflight) {
    const t0 = performance.now()
    await run(i, w)
    if (measuring) {
      count++
      if (n < lat.length) lat[n++] = performance.now() - t0
    }
  }
}
const workers = Array.from({ length: inflight }, (_, w) => worker(w))
await sleep(warmup * 1000)

const r0 = await redisCpu()
const elu0 = performance.eventLoopUtilization()
const cpu0 = process.cpuUsage()
const t0 = performance.now()
measuring = true
await sleep(seconds * 1000)
measuring = false
const wall = performance.now() - t0
const elu = performance.eventLoopUtilization(elu0)
const cpu = process.cpuUsage(cpu0)
const r1 = await redisCpu()
stop = true
await Promise.all(workers)

const sorted = lat.subarray(0, n).sort()
const pct = (p) => sorted[Math.min(n - 1, Math.floor(p * n))]
const result = {
  ...cfg,
  ops: count,
  opsPerSec: (count / wall) * 1000,
  p50Ms: pct(0.5),
  p99Ms: pct(0.99),
  mainUsPerCall: (elu.active * 1000) / count,
  procUsPerCall: (cpu.user + cpu.system) / count,
  redisUsPerCall: ((r1 - r0) * 1e6) / count,
  eventLoopUtilization: elu.utilization,
}
await admin.del(...ids.map((id) => `sess:${id}`))
admin.disconnect()
if (impl === 'store' || impl === 'baseline') await store.close()
else client.disconnect()
process.stdout.write(JSON.stringify(result) + '\n')
