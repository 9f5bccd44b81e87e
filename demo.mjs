// `npm run demo`: one session through what relay-session does with its store,
// printing each step and the raw keys in Redis. Uses REDIS_URL when set;
// otherwise starts a throwaway server on a free port and stops it after: the
// redis-server on PATH, or one fetched into .servers/ (harness/servers.mjs).
import { Redis } from 'ioredis'
import { createRedisSessionStore } from 'relay-session-redis'
import { startRedis } from './harness/redis-server.mjs'
import { demoServer } from './harness/servers.mjs'

const server = process.env.REDIS_URL ? null : await startRedis({ bin: demoServer() })
const url = process.env.REDIS_URL ?? server.url
const raw = new Redis(url)
const store = createRedisSessionStore({ url })

const DAY = 86_400_000
const id = 'a1'.repeat(32)
const newId = 'b2'.repeat(32)

async function show(title) {
  console.log(`\n## ${title}`)
  for (const key of (await raw.keys('sess:*')).sort()) {
    const [value, pttl] = await Promise.all([raw.get(key), raw.pttl(key)])
    console.log(`  ${key.replace(/([0-9a-f]{8})[0-9a-f]{56}/, '$1…')}  (expires in ${(pttl / 1000).toFixed(1)} s)\n    ${value}`)
  }
}

try {
  await raw.del(`sess:${id}`, `sess:${newId}`, `sess:lock:${id}`, `sess:lock:${newId}`)
  console.log(`relay-session-redis demo against ${url.replace(/\/\/[^@]*@/, '//***@')}`)

  await store.set(id, {
    data: { user: { id: 7, name: 'Ada' }, cart: [], total: 0.1 + 0.2, flags: { beta: true } },
    meta: { id, createdAt: Date.now(), expiresAt: Date.now() + DAY },
  }, DAY)
  await show('1. new session: set(id, session, ttl)')

  await store.merge(id, { 'data.user.name': 'Pascal', 'meta.expiresAt': Date.now() + DAY }, DAY)
  await show("2. save: merge(id, {'data.user.name': 'Pascal', 'meta.expiresAt': …}) — cart stays [] and total keeps every digit (cjson would write {} and 0.3)")

  await store.merge(id, { 'data.user.id': undefined }, DAY)
  await show("3. logout: merge(id, {'data.user.id': undefined}) removes the key")

  const copy = await store.get(id)
  copy.meta.id = newId
  await store.set(newId, copy, DAY)
  await store.merge(id, { data: null, meta: { redirectTo: newId } }, 5000)
  await show('4. rotateId(): set(newId, copy), then the old id redirects for a 5 s grace period')
  console.log(`  get(oldId) → ${JSON.stringify(await store.get(id))}`)

  console.log('\n## 5. lock')
  console.log(`  lock(newId, 5000) → ${await store.lock(newId, 5000)}`)
  console.log(`  lock(newId, 5000) again → ${await store.lock(newId, 5000)} (held)`)
  console.log(`  isLocked(newId) → ${await store.isLocked(newId)}`)
  await show('   the lock key holds this store\'s random token')
  await store.unlock(newId)
  console.log(`  unlock(newId); isLocked(newId) → ${await store.isLocked(newId)}`)

  await store.delete(newId)
  await show('6. destroy(): delete(newId) removes the session and its lock')
} finally {
  await store.close()
  raw.disconnect()
  await server?.stop()
}
