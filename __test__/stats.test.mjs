// store.stats(), store.status and store.ping(): the counters each call moves,
// the latency histogram, calls in flight, reconnects after a restart.
import assert from 'node:assert/strict'
import diagnosticsChannel from 'node:diagnostics_channel'
import { describe, it } from 'node:test'
import { REVIVE_MAX_DELAY_MS, assertWithinBound, createRedisSessionStore, msUntilSuccess, newId, onCluster, rejectsWith, session, until, useRedis } from './support/setup.mjs'
import { freePort, startRedis } from '../harness/redis-server.mjs'
import { startProxy } from '../harness/proxy.mjs'

const redis = useRedis()
const TTL = 60_000

/** Whether the server has a native compare-and-set (Redis 8.4+, Valkey 8.1+). */
async function hasNativeSwap() {
  const info = await redis.admin.info('server')
  const field = (k) => new RegExp(`^${k}:(.*)$`, 'm').exec(info)?.[1]?.trim()
  const name = field('server_name') ?? 'redis'
  const [major, minor] = (field(`${name}_version`) ?? field('redis_version')).split('.').map(Number)
  return name === 'redis' ? major > 8 || (major === 8 && minor >= 4) : major > 8 || (major === 8 && minor >= 1)
}

const sum = (o) => Object.values(o).reduce((a, b) => a + b, 0)

describe('stats()', () => {
  it('starts at zero, with one histogram per op', () => {
    const store = redis.store()
    const s = store.stats()
    assert.equal(sum(s.calls), 0)
    assert.equal(sum(s.errors), 0)
    assert.equal(sum(s.errorCodes), 0)
    assert.equal(s.inFlight, 0)
    assert.equal(s.reconnects, 0)
    assert.deepEqual(Object.keys(s.calls), ['get', 'set', 'delete', 'merge', 'lock', 'unlock', 'isLocked', 'touch'])
    assert.deepEqual(Object.keys(s.latency), Object.keys(s.calls))
    for (const l of Object.values(s.latency)) {
      assert.equal(l.buckets.length, s.latencyBoundsMs.length)
      assert.equal(l.count, 0)
    }
    for (let i = 1; i < s.latencyBoundsMs.length; i++) assert.ok(s.latencyBoundsMs[i] > s.latencyBoundsMs[i - 1])
  })

  it('counts calls, hits and misses, locks and errors by op and code', async () => {
    const store = redis.store()
    const other = redis.store()
    const [a, b, bad] = [newId(), newId(), newId()]
    await store.set(a, session(a), TTL)
    assert.ok(await store.get(a))
    assert.equal(await store.get(b), null)
    assert.equal(await store.lock(a, TTL), true)
    assert.equal(await other.lock(a, TTL), false)
    await other.unlock(a) // not its lock: nothing sent
    await store.unlock(a)
    assert.equal(await store.lock(b, TTL), true)
    await redis.admin.set(`sess:lock:${b}`, 'someone-else')
    await store.unlock(b) // the lock changed hands
    assert.equal(await store.isLocked(a), false)
    assert.equal(await store.touch(a, TTL), true)
    assert.equal(await store.touch(b, TTL), false)
    await store.delete(a)
    await redis.admin.hset(`sess:${bad}`, 'f', 'v')
    await rejectsWith(store.get(bad), 'ERR_REDIS')
    await rejectsWith(store.get(''), 'ERR_INVALID_ARG') // refused in JS: not counted

    const s = store.stats()
    assert.deepEqual(s.calls, { get: 3, set: 1, delete: 1, merge: 0, lock: 2, unlock: 2, isLocked: 1, touch: 2 })
    assert.deepEqual(s.errors, { get: 1, set: 0, delete: 0, merge: 0, lock: 0, unlock: 0, isLocked: 0, touch: 0 })
    assert.equal(s.errorCodes.ERR_REDIS, 1)
    assert.equal(sum(s.errorCodes), 1)
    assert.deepEqual(s.gets, { hits: 1, misses: 1 })
    assert.deepEqual(s.locks, { taken: 2, refused: 0, released: 1, otherHolder: 1, notHeld: 0 })
    const o = other.stats()
    assert.deepEqual(o.locks, { taken: 0, refused: 1, released: 0, otherHolder: 0, notHeld: 1 })
    for (const [op, n] of Object.entries(s.calls)) {
      const l = s.latency[op]
      assert.equal(l.count, n, op)
      assert.equal(sum(l.buckets), n, op)
      if (n > 0) assert.ok(l.p50Ms > 0 && l.p50Ms <= l.p99Ms, `${op}: ${l.p50Ms} ${l.p99Ms}`)
    }
    assert.equal(s.inFlight, 0)
  })

  it('counts a get whose stored text is not JSON as a failed get, as tracing reports it', async () => {
    const store = redis.store()
    const id = newId()
    await redis.admin.set(`sess:${id}`, '{"data":', 'PX', TTL)
    const channel = diagnosticsChannel.tracingChannel('relay-session-redis:call')
    /** @type {string[]} */
    const errors = []
    const handlers = { start() {}, end() {}, asyncStart() {}, asyncEnd() {}, error: (/** @type {any} */ c) => errors.push(c.errorCode) }
    channel.subscribe(handlers)
    try {
      await rejectsWith(store.get(id), 'ERR_CORRUPT_SESSION')
    } finally {
      channel.unsubscribe(handlers)
    }
    assert.deepEqual(errors, ['ERR_CORRUPT_SESSION'])
    const s = store.stats()
    assert.deepEqual(s.gets, { hits: 0, misses: 0 })
    assert.equal(s.calls.get, 1)
    assert.equal(s.errors.get, 1)
    assert.equal(s.errorCodes.ERR_CORRUPT_SESSION, 1)
  })

  it('counts merges by the way they went', async () => {
    // Without the read cache, which would drop the text the other client
    // changes before the merge could find it out of date.
    const store = redis.store({ readCache: false })
    const native = await hasNativeSwap()
    const id = newId()
    await store.set(id, session(id), TTL)
    await store.get(id)
    await store.merge(id, { 'data.a': 1 }, TTL) // remembered from the get
    await redis.admin.set(`sess:${id}`, JSON.stringify(session(id, { changed: true })), 'PX', TTL)
    await store.merge(id, { 'data.b': 2 }, TTL) // remembered text out of date: reads
    await store.merge(newId(), { 'data.c': 3 }, TTL) // no session
    await redis.admin.set(`sess:${id}`, '{"data":', 'PX', TTL)
    await store.merge(id, { 'data.d': 4 }, TTL).catch(() => {}) // corrupt: fails
    let m = store.stats().merges
    assert.equal(m.remembered, 1)
    assert.equal(m.stale, 2) // the second merge, and the corrupt one
    assert.equal(m.readThenSwap, 1)
    assert.equal(m.missing, 1)
    assert.equal(m.native, native ? 2 : 0)
    const s = store.stats()
    assert.equal(s.calls.merge, 4)
    assert.deepEqual(s.gets, { hits: 1, misses: 0 })
    assert.equal(s.errors.merge, 1)
    assert.equal(s.errorCodes.ERR_CORRUPT_SESSION, 1)

    // Two stores merging into one session at once meet conflicts, which the
    // script or another read resolves.
    const other = redis.store()
    await store.set(id, session(id), TTL)
    for (let round = 0; round < 50 && store.stats().merges.conflicts + other.stats().merges.conflicts === 0; round++) {
      await Promise.all(
        Array.from({ length: 20 }, (_, i) => (i % 2 ? store : other).merge(id, { [`data.k${round}_${i}`]: i }, TTL)),
      )
    }
    const both = [store.stats().merges, other.stats().merges]
    const conflicts = both[0].conflicts + both[1].conflicts
    assert.ok(conflicts > 0, 'no conflict in 50 rounds')
    // Each conflict is resolved by the script or by another read.
    assert.ok(both.reduce((n, x) => n + x.script + x.readThenSwap, 0) > 0)
  })

  // A proxy in front of one node: not a cluster's address.
  it('counts calls in flight until they settle', { skip: onCluster }, async () => {
    // Replies held back by a proxy keep the calls in flight.
    const proxy = await startProxy(redis.server.port)
    // Gets that go to Redis: not answered by the read cache.
    const store = createRedisSessionStore({ url: proxy.url, readCache: false, commandTimeout: 10_000 })
    try {
      await store.set('warm', session('warm'), TTL)
      // What the store sends is held 2 s: no call can settle before that,
      // so once all 100 have crossed, the count stays at 100 while it is read.
      proxy.holdSent = () => 2000
      const calls = Array.from({ length: 100 }, () => store.get('warm'))
      await until(() => store.stats().inFlight === 100, 2000, 'the 100 calls counted in flight')
      assert.equal(proxy.heldSent, 0, 'the calls were still held when counted')
      await Promise.all(calls)
      assert.equal(store.stats().inFlight, 0)
    } finally {
      await store.close()
      await proxy.stop()
    }
  })
})

describe('status and ping()', () => {
  it("is 'connecting' until the first call, then 'ready', then 'closed'", async () => {
    const store = createRedisSessionStore({ url: redis.server.url })
    assert.equal(store.status, 'connecting')
    const ms = await store.ping()
    assert.equal(typeof ms, 'number')
    assert.ok(ms >= 0)
    assert.equal(store.status, 'ready')
    await store.close()
    assert.equal(store.status, 'closed')
    await rejectsWith(store.ping(), 'ERR_CLOSED')
  })

  it('rejects within the call bound when no server answers, and stays connecting', async () => {
    const port = await freePort()
    const deadlines = { connectTimeout: 500, commandTimeout: 500 }
    const store = createRedisSessionStore({ url: `redis://127.0.0.1:${port}`, ...deadlines })
    const t0 = Date.now()
    await rejectsWith(store.ping(), 'ERR_CONNECTION')
    assertWithinBound(Date.now() - t0, deadlines)
    assert.equal(store.status, 'connecting')
    await store.close()
  })

  for (const readCache of [false, true]) {
    const cache = readCache ? ' (read cache on)' : ''
    it(`a ping that finds the connection lost starts the reconnect, as a session call does${cache}`, async () => {
      const port = await freePort()
      let server = await startRedis({ port })
      const store = createRedisSessionStore({ url: server.url, connectTimeout: 300, commandTimeout: 300, readCache })
      try {
        await store.ping()
        await server.stop()
        await rejectsWith(store.ping(), 'ERR_CONNECTION')
        assert.equal(store.status, 'reconnecting')
        server = await startRedis({ port })
        // No call is made from here: only the background reconnect can bring it back.
        await until(() => store.status === 'ready', 4 * (REVIVE_MAX_DELAY_MS + 600), 'the store ready again, by its revive ping')
        assert.equal(store.stats().reconnects, 1)
      } finally {
        await store.close()
        await server.stop()
      }
    })
  }

  it("is 'reconnecting' while the server is down, and counts the reconnect", async () => {
    const port = await freePort()
    let server = await startRedis({ port })
    const store = createRedisSessionStore({ url: server.url, connectTimeout: 300, commandTimeout: 300 })
    try {
      await store.set('a', session('a'), TTL)
      assert.equal(store.status, 'ready')
      await server.stop()
      await rejectsWith(store.get('a'), 'ERR_CONNECTION')
      assert.equal(store.status, 'reconnecting')
      server = await startRedis({ port })
      await msUntilSuccess(() => store.ping(), 10_000)
      await until(() => store.status === 'ready', 4 * (REVIVE_MAX_DELAY_MS + 600), 'the store ready again')
      assert.equal(store.stats().reconnects, 1)
      const s = store.stats()
      assert.ok(s.errorCodes.ERR_CONNECTION >= 1)
      assert.equal(s.errors.get, s.errorCodes.ERR_CONNECTION)
    } finally {
      await store.close()
      await server.stop()
    }
  })
})
