// Calls made in one tick cross into Rust together and run as one pipeline.
// What callers may rely on: order, independence of outcomes, every call settled.
import assert from 'node:assert/strict'
import { it } from 'node:test'
import { newId, rejectsWith, session, useRedis } from './support/setup.mjs'

const redis = useRedis()

it('calls made in one tick run in the order they were made', async () => {
  const store = redis.store()
  const id = newId()
  const [, first, , second, locked, held, , after] = await Promise.all([
    store.set(id, session(id, { n: 1 }), 60_000),
    store.get(id),
    store.merge(id, { 'data.n': 2 }, 60_000),
    store.get(id),
    store.lock(id, 5000),
    store.isLocked(id),
    store.delete(id),
    store.get(id),
  ])
  assert.equal(first.data.n, 1)
  assert.equal(second.data.n, 2)
  assert.equal(locked, true)
  assert.equal(held, true)
  assert.equal(after, null)
  assert.equal(await store.isLocked(id), false)
})

it('one call that fails does not fail the others of its tick', async () => {
  const store = redis.store()
  const [good, corrupt] = [newId(), newId()]
  await store.set(good, session(good), 60_000)
  await redis.admin.set(`sess:${corrupt}`, 'not json')
  const results = await Promise.allSettled([
    store.merge(corrupt, { 'data.a': 1 }, 60_000),
    store.merge(good, { 'data.a': 1 }, 60_000),
    store.get(corrupt),
    store.get(good),
    store.get(''), // refused before it is queued
    store.lock(good, 5000),
  ])
  assert.deepEqual(results.map((r) => r.status), ['rejected', 'fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled'])
  assert.equal(results[0].reason.code, 'ERR_CORRUPT_SESSION')
  assert.equal(results[2].reason.code, 'ERR_CORRUPT_SESSION')
  assert.equal(results[3].value.data.a, 1)
  assert.equal(results[4].reason.code, 'ERR_INVALID_ARG')
  assert.equal(results[5].value, true)
  await store.unlock(good)
})

it('a thousand calls in one tick all settle, across many batches', async () => {
  const store = redis.store()
  const ids = Array.from({ length: 1000 }, () => newId())
  await Promise.all(ids.map((id, i) => store.set(id, session(id, { i }), 60_000)))
  const got = await Promise.all(ids.map((id) => store.get(id)))
  assert.deepEqual(got.map((s) => s.data.i), ids.map((_, i) => i))
  await Promise.all(ids.map((id) => store.delete(id)))
})

it("a failed call's error shows the caller in its stack", async () => {
  const store = redis.store()
  const id = newId()
  await redis.admin.set(`sess:${id}`, '[]')
  async function loadTheSessionHere() {
    await store.merge(id, { 'data.a': 1 }, 60_000)
  }
  const err = await rejectsWith(loadTheSessionHere(), 'ERR_CORRUPT_SESSION')
  assert.match(err.stack, /loadTheSessionHere/)
})
