// The package by its name, as an app requires it: CommonJS.
const assert = require('node:assert/strict')
const { it, before, after } = require('node:test')
const { createRedisSessionStore, RedisSessionStoreError } = require('relay-session-redis')

let server
before(async () => {
  const { startRedis } = await import('../harness/redis-server.mjs')
  server = await startRedis()
})
after(() => server?.stop())

it('require("relay-session-redis") works', async () => {
  assert.equal(typeof createRedisSessionStore, 'function')
  const store = createRedisSessionStore({ url: server.url })
  await store.set('cjs', { data: {}, meta: { id: 'cjs', createdAt: 1, expiresAt: 2 } }, 10_000)
  assert.equal((await store.get('cjs')).meta.id, 'cjs')
  await assert.rejects(store.get(''), (e) => e instanceof RedisSessionStoreError && e.code === 'ERR_INVALID_ARG')
  await store.close()
})
