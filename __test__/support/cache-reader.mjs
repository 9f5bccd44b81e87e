// Store B of the read cache's cross-process test (read-cache.test.mjs), in a
// process of its own: for each message {id, version}, reads the session and
// answers with the version it found. With BUSY set, the store's connection
// also carries a loop of other sessions' sets and gets meanwhile. A third
// argument, JSON, adds options (TLS; a cluster's nodes, with an empty url).
import { createRequire } from 'node:module'

const { createRedisSessionStore } = createRequire(import.meta.url)('../../store.js')
const [url, busy, more] = process.argv.slice(2)
const store = createRedisSessionStore({ ...(url ? { url } : {}), readCache: true, ...(more ? JSON.parse(more) : {}) })

let running = true
const traffic = []
if (busy === 'busy') {
  for (let j = 0; j < 8; j++) {
    traffic.push(
      (async () => {
        const id = `other-${process.pid}-${j}`
        const body = { data: { pad: 'x'.repeat(2000) }, meta: {} }
        while (running) {
          await store.set(id, body, 60_000)
          await store.get(`never-${j}`) // a miss: a round trip each time
        }
      })(),
    )
  }
}

process.on('message', async (/** @type {any} */ m) => {
  if (m === 'stop') {
    running = false
    await Promise.all(traffic)
    const stats = store.stats().readCache
    await store.close()
    process.send?.({ stats })
    return
  }
  try {
    const hits = store.stats().readCache.hits
    const s = await store.get(m.id)
    process.send?.({ version: s?.data?.version ?? null, hit: store.stats().readCache.hits > hits })
  } catch (e) {
    process.send?.({ error: String(e) })
  }
})
process.send?.('ready')
