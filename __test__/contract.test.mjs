// @ts-nocheck
// The calls relay-session makes, as the store contract describes them.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { newId, session, untilCacheServes, useRedis } from './support/setup.mjs'

const redis = useRedis()
const COOKIE_TTL = 86_400_000
const GRACE = 5000

/** relay-session's read: follows redirectTo with more gets, depth limit 10. */
async function load(store, id) {
  let current = id
  for (let depth = 0; depth <= 10; depth++) {
    const found = await store.get(current)
    if (!found) return { id: current, session: null, hops: depth }
    if (!found.meta.redirectTo) return { id: current, session: found, hops: depth }
    current = found.meta.redirectTo
  }
  throw new Error('redirect chain too long')
}

/** relay-session's lock with its defaults: 10 retries, linear backoff from 50 ms. */
async function lockWithRetry(store, id, { ttl = 5000, retries = 10, base = 50 } = {}) {
  for (let attempt = 0; attempt <= retries; attempt++) {
    if (await store.lock(id, ttl)) return true
    if (attempt < retries) await sleep(base * (attempt + 1))
  }
  return false
}

// relay-session's calls hold with the read cache off and on.
for (const readCache of [false, true]) {
  const cache = readCache ? ' (read cache on)' : ''
  describe(`a session through relay-session${cache}`, () => {
    it('new session: set; then merges of dirty paths; logout removes the user id', async () => {
      const store = redis.store({ readCache })
      const id = newId()
      await store.set(id, session(id, { userId: 42, cart: [] }), COOKIE_TTL)
      await store.merge(id, { 'data.user.name': 'Pascal' }, COOKIE_TTL)
      await store.merge(id, { 'data.cart': [1, 2, 3], 'meta.expiresAt': 1763899999999 }, COOKIE_TTL)
      await store.merge(id, { 'data.userId': undefined }, COOKIE_TTL)
      const s = await store.get(id)
      assert.equal(s.data.user.name, 'Pascal')
      assert.deepEqual(s.data.cart, [1, 2, 3])
      assert.equal(s.meta.expiresAt, 1763899999999)
      assert.ok(!('userId' in s.data))
      assert.deepEqual(s.data.flags, { beta: true }) // untouched
    })

    it('rotation: set the new id, then the old one redirects for the grace period only', async () => {
      const store = redis.store({ readCache })
      const oldId = newId()
      await store.set(oldId, session(oldId, { userId: 1 }), COOKIE_TTL)
      const newSessionId = newId()
      const copy = await store.get(oldId)
      copy.meta.id = newSessionId
      await store.set(newSessionId, copy, COOKIE_TTL)
      await store.merge(oldId, { data: null, meta: { redirectTo: newSessionId } }, GRACE)

      assert.deepEqual(await store.get(oldId), { data: null, meta: { redirectTo: newSessionId } })
      const pttl = await redis.admin.pttl(`sess:${oldId}`)
      assert.ok(pttl > 0 && pttl <= GRACE, `old id ttl ${pttl}`)
      const loaded = await load(store, oldId)
      assert.equal(loaded.id, newSessionId)
      assert.equal(loaded.hops, 1)
      assert.equal(loaded.session.data.userId, 1)
    })

    it('a chain of rotations is followed, and shortcut with a merge on the older id', async () => {
      const store = redis.store({ readCache })
      const [a, b, c] = [newId(), newId(), newId()]
      await store.set(c, session(c), COOKIE_TTL)
      await store.set(b, { data: null, meta: { redirectTo: c } }, GRACE)
      await store.set(a, { data: null, meta: { redirectTo: b } }, GRACE)
      assert.equal((await load(store, a)).hops, 2)
      await store.merge(a, { 'meta.redirectTo': c }, GRACE)
      const loaded = await load(store, a)
      assert.equal(loaded.id, c)
      assert.equal(loaded.hops, 1)
    })

    it('the shortcut on an id that has expired creates nothing', async () => {
      const store = redis.store({ readCache })
      const [a, c] = [newId(), newId()]
      await store.set(a, { data: null, meta: { redirectTo: c } }, 30)
      await sleep(60)
      await store.merge(a, { 'meta.redirectTo': c }, GRACE)
      assert.equal(await redis.admin.exists(`sess:${a}`), 0)
      assert.equal(await store.get(a), null)
    })

    it('destroy: delete', async () => {
      const store = redis.store({ readCache })
      const id = newId()
      await store.set(id, session(id), COOKIE_TTL)
      await store.delete(id)
      assert.equal(await store.get(id), null)
    })

    if (readCache) {
      it('the read cache answers on every topology', async () => {
        const store = redis.store({ readCache: true })
        const id = newId()
        await store.set(id, session(id), COOKIE_TTL)
        // On a cluster, it serves once each master's reports connection
        // answered (the heartbeat's first round).
        await untilCacheServes(store, id)
        const before = store.stats().readCache.hits
        for (let i = 0; i < 3; i++) assert.equal((await store.get(id)).meta.id, id)
        const hits = store.stats().readCache.hits - before
        assert.ok(hits >= 2, `${hits} hits`)
      })
    }
  })
}

describe('locking as relay-session does it', () => {
  it('the lock retry loop with linear backoff gets the lock once the owner unlocks', async () => {
    const owner = redis.store()
    const waiter = redis.store()
    const id = newId()
    assert.equal(await lockWithRetry(owner, id), true)
    const t0 = Date.now()
    const waiting = lockWithRetry(waiter, id)
    await sleep(120)
    assert.equal(await waiter.isLocked(id), true) // non-owners poll isLocked before they save
    await owner.unlock(id)
    assert.equal(await waiting, true)
    // Not before the owner unlocked (a lower bound holds on any machine);
    // the loop's own retries bound it from above.
    const waited = Date.now() - t0
    assert.ok(waited >= 120, `waited ${waited} ms`)
    await waiter.unlock(id)
    await waiter.unlock(id) // the second unlock, when the request closes, is harmless
    assert.equal(await owner.isLocked(id), false)
  })

  it('gives up after its retries while another holds the lock', async () => {
    const owner = redis.store()
    const waiter = redis.store()
    const id = newId()
    await owner.lock(id, 5000)
    assert.equal(await lockWithRetry(waiter, id, { retries: 3, base: 10 }), false)
    await owner.unlock(id)
  })

  it('a lock expires by itself when its holder never unlocks', async () => {
    const store = redis.store()
    const id = newId()
    // Long enough that the second try comes within it on a slow machine.
    assert.equal(await store.lock(id, 500), true)
    assert.equal(await store.lock(id, 500), false)
    await sleep(530)
    assert.equal(await store.isLocked(id), false)
    assert.equal(await store.lock(id, 5000), true)
    await store.unlock(id)
  })

  it('an expired lock taken by another store is not released by the first one', async () => {
    const first = redis.store()
    const second = redis.store()
    const id = newId()
    assert.equal(await first.lock(id, 40), true)
    await sleep(70)
    assert.equal(await second.lock(id, 5000), true)
    await first.unlock(id) // its token is gone from Redis: nothing happens
    assert.equal(await second.isLocked(id), true)
    assert.equal(await first.lock(id, 5000), false)
    await second.unlock(id)
    assert.equal(await second.isLocked(id), false)
  })

  it('unlock by a store that never locked does nothing', async () => {
    const owner = redis.store()
    const other = redis.store()
    const id = newId()
    await owner.lock(id, 5000)
    await other.unlock(id)
    assert.equal(await owner.isLocked(id), true)
    await owner.unlock(id)
  })
})
