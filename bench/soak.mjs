// npm run soak [-- minutes]: the store at full speed for a while (default 10
// minutes) with a mix of get, merge, lock+unlock and set on 1 KB and 32 KB
// sessions, against a fresh redis-server. Every 15 s it samples the process's
// RSS, its open sockets and its threads; at the end it prints the samples and
// compares the first one after warm-up (1 minute) with the last.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { createRequire } from 'node:module'
import { startRedis } from '../harness/redis-server.mjs'
import { makeSession, mergePaths } from './sessions.mjs'

const require = createRequire(import.meta.url)
const { createRedisSessionStore } = require('../store.js')

const minutes = Number(process.argv[2] ?? 10)
const IN_FLIGHT = 64
const SESSIONS = 2000 // 1,800 of 1 KB, 200 of 32 KB

const threads = () => Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))[1])
const sockets = () =>
  readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:')
    } catch {
      return false
    }
  }).length

const server = await startRedis()
const store = createRedisSessionStore({ url: server.url })
const ids = Array.from({ length: SESSIONS }, (_, i) => `soak-${i}`)
const size = (i) => (i % 10 === 9 ? 32_768 : 1024)
for (let i = 0; i < SESSIONS; i++) await store.set(ids[i], makeSession(ids[i], size(i)), 3_600_000)

let ops = 0
let errors = 0
let running = true
const t0 = Date.now()
const until = t0 + minutes * 60_000
const loops = Array.from({ length: IN_FLIGHT }, async (_, w) => {
  let n = w
  while (running) {
    const i = (n * 7919) % SESSIONS
    const id = ids[i]
    try {
      switch (n % 10) {
        case 0:
        case 1:
        case 2:
        case 3:
          await store.get(id)
          break
        case 4:
        case 5:
        case 6:
          await store.merge(id, mergePaths(n), 3_600_000)
          break
        case 7:
        case 8:
          if (await store.lock(id, 5000)) await store.unlock(id)
          break
        default:
          await store.set(id, makeSession(id, size(i)), 3_600_000)
      }
    } catch {
      errors++
    }
    ops++
    n += IN_FLIGHT
  }
})

const samples = []
const sample = () => {
  const s = {
    at: Math.round((Date.now() - t0) / 1000),
    rssMiB: Math.round((process.memoryUsage.rss() / 1048576) * 10) / 10,
    heapMiB: Math.round((process.memoryUsage().heapUsed / 1048576) * 10) / 10,
    sockets: sockets(),
    threads: threads(),
    ops,
  }
  samples.push(s)
  console.log(
    `${String(s.at).padStart(4)} s  rss ${s.rssMiB} MiB  heap ${s.heapMiB} MiB  sockets ${s.sockets}  threads ${s.threads}  ops ${s.ops}  errors ${errors}`,
  )
}
sample()
while (Date.now() < until) {
  await new Promise((r) => setTimeout(r, Math.min(15_000, until - Date.now())))
  sample()
}
running = false
await Promise.all(loops)
await store.close()
await server.stop()

const warm = samples.find((s) => s.at >= 60) ?? samples[0]
const last = samples.at(-1)
const rss = samples.filter((s) => s.at >= warm.at).map((s) => s.rssMiB)
console.log(
  `\n${minutes} min, ${ops} calls (${Math.round(ops / ((Date.now() - t0) / 1000))}/s), ${errors} errors\n` +
    `after warm-up (${warm.at} s): rss ${warm.rssMiB} MiB, sockets ${warm.sockets}, threads ${warm.threads}\n` +
    `at the end (${last.at} s): rss ${last.rssMiB} MiB, sockets ${last.sockets}, threads ${last.threads}\n` +
    `rss after warm-up: min ${Math.min(...rss)} MiB, max ${Math.max(...rss)} MiB`,
)
