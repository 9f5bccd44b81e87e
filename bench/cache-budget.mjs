// How the read cache's budget (rememberedTextBytes) meets the working set:
// one store with readCache: true reads sessions picked at random from a
// working set of 0.5, 1 and 4 times its budget, 32 gets in flight, and reports
// the hit rate and gets per second, against the same store without the cache,
// on a fresh redis-server per run.
//   BUDGET_MB (8), BUDGET_SIZES (1024,32768), BUDGET_SECONDS (3)
import { createRequire } from 'node:module'
import { startRedis } from '../harness/redis-server.mjs'
import { makeSession } from './sessions.mjs'

const require = createRequire(import.meta.url)
const { createRedisSessionStore } = require('../store.js')
const BUDGET = Number(process.env.BUDGET_MB ?? 8) * 2 ** 20
const SIZES = (process.env.BUDGET_SIZES ?? '1024,32768').split(',').map(Number)
const SECONDS = Number(process.env.BUDGET_SECONDS ?? 3)
const IN_FLIGHT = 32

async function run(size, share, readCache) {
  const server = await startRedis()
  const store = createRedisSessionStore({ url: server.url, readCache, rememberedTextBytes: BUDGET })
  try {
    // About what an entry takes: the text, the id, the bookkeeping.
    const count = Math.max(1, Math.round((BUDGET * share) / (size + 64 + 180)))
    const ids = Array.from({ length: count }, (_, i) => `b${i}`)
    const writer = createRedisSessionStore({ url: server.url })
    for (let i = 0; i < ids.length; i += 500) await Promise.all(ids.slice(i, i + 500).map((id) => writer.set(id, makeSession(id, size), 3_600_000)))
    await writer.close()
    for (const id of ids) await store.get(id) // warm
    const before = store.stats().readCache
    let gets = 0
    const end = performance.now() + SECONDS * 1000
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (performance.now() < end) {
          await store.get(ids[Math.floor(Math.random() * ids.length)])
          gets++
          // Let timers and I/O in between hits.
          if (gets % 64 === 0) await new Promise((r) => setImmediate(r))
        }
      }),
    )
    const after = store.stats().readCache
    const hits = after.hits - before.hits
    return { count, rate: gets / SECONDS, hitRate: hits / gets, bytes: after.bytes }
  } finally {
    await store.close()
    await server.stop()
  }
}

console.log(`budget ${BUDGET / 2 ** 20} MiB, ${IN_FLIGHT} gets in flight, ${SECONDS} s per cell`)
console.log('| session | working set | sessions | hit rate | gets/s with the cache | without | ratio | held |')
console.log('|---|---|---|---|---|---|---|---|')
for (const size of SIZES) {
  for (const share of [0.5, 1, 4]) {
    const on = await run(size, share, true)
    const off = await run(size, share, false)
    console.log(
      `| ${size / 1024} KB | ${share}× | ${on.count.toLocaleString('en')} | ${(on.hitRate * 100).toFixed(0)} % | ${Math.round(on.rate).toLocaleString('en')} | ${Math.round(off.rate).toLocaleString('en')} | ${(on.rate / off.rate).toFixed(2)}× | ${(on.bytes / 2 ** 20).toFixed(1)} MiB |`,
    )
  }
}
