// Every public argument is checked: bad input rejects with ERR_INVALID_ARG and a
// message naming the argument, and writes nothing.
import assert from 'node:assert/strict'
import { before, describe, it } from 'node:test'
import { newId, rejectsWith, session, useRedis } from './support/setup.mjs'

const redis = useRedis()
let store
let id
let stored

before(async () => {
  await redis.ready()
  store = redis.store()
  id = newId()
  await store.set(id, session(id), 600_000)
  assert.equal(await store.lock(id, 600_000), true)
  stored = await redis.snapshot()
})

/** Rejects with ERR_INVALID_ARG naming `name`, and Redis is as it was. */
async function refused(promise, name) {
  await rejectsWith(promise, 'ERR_INVALID_ARG', name)
  assert.deepEqual(await redis.snapshot(), stored, 'something was written')
}

const circular = () => {
  const o = { a: 1 }
  o.self = o
  return o
}

const BAD_IDS = [undefined, null, '', 1, {}, ['x'], Symbol('s'), Buffer.from('x')]
const BAD_TTLS = [undefined, null, 0, -1, -0.5, NaN, Infinity, -Infinity, '1000', 2 ** 53, {}, 10n]

describe('session ids', () => {
  for (const method of ['get', 'set', 'delete', 'merge', 'lock', 'unlock', 'isLocked']) {
    it(`${method} refuses ids that are not non-empty strings`, async () => {
      for (const bad of BAD_IDS) {
        const args = { get: [], set: [session('x'), 1000], delete: [], merge: [{ 'data.a': 1 }, 1000], lock: [1000], unlock: [], isLocked: [] }[method]
        await refused(store[method](bad, ...args), 'sessionId')
      }
    })
  }
})

describe('session ids that start with the lock prefix', () => {
  // Session `lock:<id>` would be stored at `sess:lock:<id>`: the lock key of
  // session `<id>`, which exists here.
  const args = { get: [], set: [session('x'), 1000], delete: [], merge: [{ 'data.a': 1 }, 1000], lock: [1000], unlock: [], isLocked: [], touch: [1000] }
  for (const method of Object.keys(args)) {
    it(`${method} refuses them, whatever the lock prefix, and writes nothing`, async () => {
      await refused(store[method](`lock:${id}`, ...args[method]), 'lock prefix')
      await refused(store[method]('lock:', ...args[method]), 'lock prefix')
      const other = redis.store({ lockPrefix: 'L-' })
      await refused(other[method](`L-${id}`, ...args[method]), 'lock prefix "L-"')
    })
  }
  it('leave ids that only contain it alone', async () => {
    const near = `x-lock:${id}`
    await store.set(near, session(near), 600_000)
    assert.equal((await store.get(near)).meta.id, near)
    await store.delete(near)
    assert.deepEqual(await redis.snapshot(), stored)
  })
})

describe('ttlMs', () => {
  for (const method of ['set', 'merge', 'lock']) {
    it(`${method} refuses a ttl that is not a finite number > 0`, async () => {
      for (const bad of BAD_TTLS) {
        const args = { set: [id, session(id)], merge: [id, { 'data.a': 1 }], lock: [newId()] }[method]
        await refused(store[method](...args, bad), 'ttlMs')
      }
    })
  }
})

describe('set data', () => {
  it('refuses data that is not an object', async () => {
    for (const bad of [undefined, null, 'text', 42, true, [1, 2]]) await refused(store.set(id, bad, 1000), 'data')
  })

  it('refuses data JSON cannot hold', async () => {
    await refused(store.set(id, { data: { n: 10n }, meta: {} }, 1000), 'data')
    await refused(store.set(id, { data: circular(), meta: {} }, 1000), 'data')
    await refused(store.set(id, { toJSON: () => [1] }, 1000), 'data')
  })
})

describe('merge paths', () => {
  it('refuses paths that are not a plain object', async () => {
    for (const bad of [undefined, null, 'data.a', 1, [['data.a', 1]], new Map([['data.a', 1]]), new (class Paths {})(), Object.create({ 'data.a': 1 })]) {
      await refused(store.merge(id, bad, 1000), 'paths')
    }
  })

  it('refuses symbol keys and the empty key', async () => {
    await refused(store.merge(id, { [Symbol('s')]: 1 }, 1000), 'paths')
    await refused(store.merge(id, { '': 1 }, 1000), 'paths')
    await refused(store.merge(id, { 'data.a': 1, '': 2 }, 1000), 'paths')
  })

  it('refuses values JSON cannot hold, naming the path, and applies none of the paths', async () => {
    await refused(store.merge(id, { 'data.ok': 1, 'data.big': 10n }, 1000), "paths['data.big']")
    await refused(store.merge(id, { 'data.ok': 1, 'data.loop': circular() }, 1000), "paths['data.loop']")
  })

  it('accepts a null-prototype object', async () => {
    const paths = Object.create(null)
    paths['data.fromNull'] = 1
    await store.merge(id, paths, 600_000)
    assert.equal((await store.get(id)).data.fromNull, 1)
    await store.merge(id, { 'data.fromNull': undefined }, 600_000)
    stored = await redis.snapshot()
  })
})

describe('options', () => {
  it('are checked before anything connects', () => {
    assert.throws(() => redis.store({ url: 1 }), { code: 'ERR_INVALID_ARG', message: /options\.url must be a string/ })
  })
})
