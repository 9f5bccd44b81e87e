// A store round trip, runtime-neutral: run by scripts/runtimes.mjs under Bun
// and Deno (and Node). Loads the package from STORE_PATH (its store.js) and
// talks to REDIS_URL; prints what it read, as JSON.
import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const { createRedisSessionStore } = require(process.argv[2] ?? process.env.STORE_PATH)
const url = process.env.REDIS_URL
const store = createRedisSessionStore({ url })
const id = 'smoke'.repeat(8)
await store.set(id, { data: { n: 1, list: [] }, meta: { id, createdAt: 1, expiresAt: 2 } }, 60000)
await store.merge(id, { 'data.n': 2 }, 60000)
const got = await store.get(id)
const locked = await store.lock(id, 1000)
await store.unlock(id)
await store.delete(id)
console.log(JSON.stringify({ got, locked, after: await store.get(id) }))
await store.close()
