// What the read cache costs Redis: 100,000 sessions (about 1 KB each) read
// by 4 stores with readCache: true, against the same reads without it, each
// on a fresh redis-server. Reports the tracking table (INFO stats:
// tracking_total_keys, tracking_total_items), used_memory before and after
// the reads, and Redis's CPU per get (INFO cpu).
//   TRACK_SESSIONS (100000), TRACK_STORES (4), APP_SERVER (a key of
//   harness/servers.mjs; default: the redis-server on PATH)
import { createRequire } from 'node:module'
import { Redis } from 'ioredis'
import { describeServer, serverBinary, useServer } from '../harness/servers.mjs'
import { findRedisServer, startRedis } from '../harness/redis-server.mjs'
import { makeSession } from './sessions.mjs'

const require = createRequire(import.meta.url)
const { createRedisSessionStore } = require('../store.js')
const SESSIONS = Number(process.env.TRACK_SESSIONS ?? 100_000)
const STORES = Number(process.env.TRACK_STORES ?? 4)
useServer(process.env.APP_SERVER)

/** INFO fields as numbers. */
async function info(admin) {
  const text = await admin.info()
  return Object.fromEntries(
    text
      .split('\r\n')
      .filter((l) => l.includes(':'))
      .map((l) => [l.slice(0, l.indexOf(':')), Number(l.slice(l.indexOf(':') + 1))]),
  )
}

const cpu = (i) => i.used_cpu_sys + i.used_cpu_user

async function run(readCache) {
  const server = await startRedis()
  const admin = new Redis({ port: server.port, host: '127.0.0.1' })
  try {
    const writer = createRedisSessionStore({ url: server.url })
    const ids = Array.from({ length: SESSIONS }, (_, i) => `t${i.toString(16).padStart(8, '0')}`)
    for (let i = 0; i < ids.length; i += 1000) {
      await Promise.all(ids.slice(i, i + 1000).map((id) => writer.set(id, makeSession(id, 1024), 3_600_000)))
    }
    await writer.close()
    const stores = Array.from({ length: STORES }, () =>
      createRedisSessionStore({ url: server.url, readCache, rememberedTextBytes: 512 << 20 }),
    )
    const before = await info(admin)
    for (const store of stores) {
      for (let i = 0; i < ids.length; i += 1000) await Promise.all(ids.slice(i, i + 1000).map((id) => store.get(id)))
    }
    const after = await info(admin)
    // A second pass: with the cache, answered from memory.
    for (const store of stores) {
      for (let i = 0; i < ids.length; i += 1000) await Promise.all(ids.slice(i, i + 1000).map((id) => store.get(id)))
    }
    const again = await info(admin)
    const hits = stores.reduce((n, s) => n + s.stats().readCache.hits, 0)
    await Promise.all(stores.map((s) => s.close()))
    const gets = ids.length * STORES
    return {
      readCache,
      trackedKeys: after.tracking_total_keys ?? 0,
      trackedItems: after.tracking_total_items ?? 0,
      memoryMB: (after.used_memory - before.used_memory) / 2 ** 20,
      bytesPerItem: after.tracking_total_items ? (after.used_memory - before.used_memory) / after.tracking_total_items : 0,
      cpuUsPerGet: ((cpu(after) - cpu(before)) * 1e6) / gets,
      secondPassCpuUsPerGet: ((cpu(again) - cpu(after)) * 1e6) / gets,
      hits,
    }
  } finally {
    admin.disconnect()
    await server.stop()
  }
}

console.log(`${describeServer(process.env.APP_SERVER ? serverBinary(process.env.APP_SERVER) : findRedisServer())}: ${SESSIONS.toLocaleString('en')} sessions of about 1 KB, ${STORES} stores each reading every one twice`)
console.log('| readCache | tracking_total_keys | tracking_total_items | used_memory growth | per (key, store) | Redis CPU µs/get, first pass | second pass | hits |')
console.log('|---|---|---|---|---|---|---|---|')
for (const readCache of [false, true]) {
  const r = await run(readCache)
  console.log(
    `| ${r.readCache} | ${r.trackedKeys.toLocaleString('en')} | ${r.trackedItems.toLocaleString('en')} | ${r.memoryMB.toFixed(1)} MB | ${r.bytesPerItem.toFixed(0)} B | ${r.cpuUsPerGet.toFixed(2)} | ${r.secondPassCpuUsPerGet.toFixed(2)} | ${r.hits.toLocaleString('en')} |`,
  )
}
