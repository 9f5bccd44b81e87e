// Atomicity under concurrency: several stores (each its own connection), many
// calls in flight at once.
import assert from 'node:assert/strict'
import { it } from 'node:test'
import { newId, session, useRedis } from './support/setup.mjs'

const redis = useRedis()

it('400 concurrent merges to distinct paths of one session from 4 stores lose nothing', async () => {
  const stores = Array.from({ length: 4 }, () => redis.store())
  const id = newId()
  await stores[0].set(id, session(id, { counters: {}, list: [] }), 60_000)
  await Promise.all(
    Array.from({ length: 400 }, (_, i) =>
      stores[i % 4].merge(id, { [`data.counters.c${i}`]: i, [`data.byStore.s${i % 4}.m${i}`]: { at: i, note: 'x'.repeat(i % 50) } }, 60_000),
    ),
  )
  const s = await stores[0].get(id)
  assert.equal(Object.keys(s.data.counters).length, 400)
  for (let i = 0; i < 400; i++) {
    assert.equal(s.data.counters[`c${i}`], i)
    assert.equal(s.data.byStore[`s${i % 4}`][`m${i}`].at, i)
  }
  assert.deepEqual(s.data.user, { id: 7, name: 'Ada' }) // untouched
})

it('300 concurrent lock calls from 3 stores have exactly one winner', async () => {
  const stores = Array.from({ length: 3 }, () => redis.store())
  const id = newId()
  const results = await Promise.all(Array.from({ length: 300 }, (_, i) => stores[i % 3].lock(id, 10_000)))
  assert.equal(results.filter(Boolean).length, 1)
  const winner = stores[results.indexOf(true) % 3]
  for (const s of stores) if (s !== winner) await s.unlock(id) // not theirs: nothing happens
  assert.equal(await winner.isLocked(id), true)
  await winner.unlock(id)
  assert.equal(await winner.isLocked(id), false)
})

it('rounds of lock contention: one winner per round, released each time', async () => {
  const stores = Array.from({ length: 3 }, () => redis.store())
  const id = newId()
  for (let round = 0; round < 20; round++) {
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => stores[i % 3].lock(id, 10_000)))
    assert.equal(results.filter(Boolean).length, 1, `round ${round}`)
    await Promise.all(stores.map((s) => s.unlock(id)))
    assert.equal(await stores[0].isLocked(id), false, `round ${round}`)
  }
})
