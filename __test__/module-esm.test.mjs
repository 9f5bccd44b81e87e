// The package by its name, as an app imports it: ESM.
import assert from 'node:assert/strict'
import { it } from 'node:test'
import { createRedisSessionStore, RedisSessionStoreError } from 'relay-session-redis'
import * as pkg from 'relay-session-redis'
import { useRedis } from './support/setup.mjs'

const redis = useRedis()

it('import { createRedisSessionStore } from "relay-session-redis" works', async () => {
  assert.equal(typeof createRedisSessionStore, 'function')
  assert.equal(typeof RedisSessionStoreError, 'function')
  assert.equal(pkg.createRedisSessionStore, createRedisSessionStore)
  const store = createRedisSessionStore({ url: redis.server.url })
  await store.set('esm', { data: {}, meta: { id: 'esm', createdAt: 1, expiresAt: 2 } }, 10_000)
  assert.equal((await store.get('esm')).meta.id, 'esm')
  await store.close()
})
