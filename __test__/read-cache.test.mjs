// The read cache (readCache: true; off by default): a get of a session this store
// holds is answered from memory while the server reports changes to the
// session keys. Each rule of the README's "Read cache" has a test here.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { startProxy } from '../harness/proxy.mjs'
import { execFileSync } from 'node:child_process'
import { findRedisServer, startRedis } from '../harness/redis-server.mjs'
import { FRESH_FOR_MS, createRedisSessionStore, newId, rejectsWith, session, until, useRedis } from './support/setup.mjs'
import { staleReads } from './support/stale-reads.mjs'

const redis = useRedis()
/** The server's version, from its binary: Redis before 6.2 is one the cache stands aside on. */
const serverVersion = (() => {
  const out = execFileSync(findRedisServer(), ['--version'], { encoding: 'utf8' })
  const [major, minor] = (/v=(\d+)\.(\d+)/.exec(out) ?? [0, 0, 0]).slice(1).map(Number)
  return { valkey: /valkey/i.test(out), at: major * 100 + minor }
})()
const beforeRedis62 = !serverVersion.valkey && serverVersion.at < 602
/** Suites that need the cache to answer: skipped, with the reason, where it stands aside. */
const answers = beforeRedis62 ? { skip: 'Redis before 6.2: the cache stands aside (see the suite for it)' } : {}
const TTL = 60_000
const ROUNDS = Number(process.env.CACHE_ROUNDS ?? 10_000)

/** How many gets the store answered from memory since `before`. */
const hitsSince = (store, before) => store.stats().readCache.hits - before

/**
 * Makes the proxy hold the first chunk the server sends that `matches`, and
 * what follows it on that connection, until `gate.release()`.
 * @param {Awaited<ReturnType<typeof startProxy>>} proxy
 * @param {(data: Buffer) => boolean} matches
 */
function holdFirst(proxy, matches) {
  const gate = { held: false, release: () => {} }
  proxy.holdAnswered = (data) => {
    if (gate.held || !matches(data)) return null
    gate.held = true
    return new Promise((resolve) => (gate.release = () => resolve(undefined)))
  }
  return gate
}

/**
 * A caching store whose connections go through a proxy, tracking already,
 * and a session of its id at `v: 1` in Redis (written around the store).
 */
async function readerBehindProxy() {
  const proxy = await startProxy(redis.server.port)
  const reader = createRedisSessionStore({ url: proxy.url, readCache: true })
  await tracking(reader)
  const id = newId()
  await redis.admin.set(`sess:${id}`, JSON.stringify(session(id, { v: 1 })), 'PX', TTL)
  return { proxy, reader, id }
}

/** Waits until the store's link tracks (its first round turns tracking on). */
async function tracking(store) {
  const id = newId()
  await store.get(id)
  assert.equal(store.stats().readCache.tracking, 'on')
}

describe('a get of a session this store holds', answers, () => {
  it('is answered from memory after the store wrote or read it, with no round trip', async () => {
    const store = redis.store({ readCache: true })
    const id = newId()
    await store.set(id, session(id, { n: 1 }), TTL)
    const before = store.stats().readCache.hits
    const calls = Number((await redis.admin.info('stats')).match(/total_commands_processed:(\d+)/)[1])
    for (let i = 0; i < 10; i++) assert.equal((await store.get(id)).data.n, 1)
    const after = Number((await redis.admin.info('stats')).match(/total_commands_processed:(\d+)/)[1])
    assert.equal(hitsSince(store, before), 10)
    assert.equal(after - calls, 1, 'only the INFO between them reached the server')
    // Each get hands out a fresh object.
    const a = await store.get(id)
    a.data.n = 2
    assert.equal((await store.get(id)).data.n, 1)
    // Another store reads it once, then holds it.
    const other = redis.store({ readCache: true })
    await other.get(id)
    const otherBefore = other.stats().readCache.hits
    await other.get(id)
    assert.equal(hitsSince(other, otherBefore), 1)
    assert.equal(store.stats().calls.get, 12, 'hits count as gets')
    assert.equal(store.stats().gets.hits, 12)
  })

  it('resolves a hit in the same tick: settled before the event loop turns again', async () => {
    const store = redis.store({ readCache: true })
    const id = newId()
    await store.set(id, session(id, { n: 1 }), TTL)
    const before = store.stats().readCache.hits
    const order = []
    setImmediate(() => order.push('next turn'))
    store.get(id).then((s) => order.push(`get ${s.data.n}`))
    await new Promise((resolve) => setImmediate(resolve))
    // An answer that crossed back from Rust comes in a later phase of the
    // loop, after the check phase's immediates.
    assert.deepEqual(order, ['get 1', 'next turn'])
    assert.equal(hitsSince(store, before), 1)
  })

  it('while more than one call of the store is out, answers a hit from memory when their outcomes come back; with one, at once', async () => {
    // The proxy holds the answers to misses (their batch stays out); a hit
    // made meanwhile waits for them when two are out, and sends nothing. One
    // call out (an unlock the app did not wait for) does not hold it.
    const proxy = await startProxy(redis.server.port)
    const store = createRedisSessionStore({ url: proxy.url, readCache: true })
    try {
      const id = newId()
      await store.set(id, session(id, { n: 1 }), TTL)
      for (const out of [1, 2]) {
        const missing = Array.from({ length: out }, () => newId())
        proxy.sent = []
        const gate = holdFirst(proxy, () => proxy.sent?.some((s) => missing.every((m) => s.includes(m))) ?? false)
        const before = store.stats().readCache
        let settled = false
        const misses = Promise.all(missing.map((m) => store.get(m)))
        await Promise.resolve() // the misses' batch leaves (a microtask)
        const hit = store.get(id).then((s) => {
          settled = true
          return s
        })
        await until(() => gate.held, 5000, "the misses' answers were held")
        for (let turn = 0; turn < 3; turn++) await new Promise((resolve) => setImmediate(resolve))
        assert.equal(settled, out === 1, out === 1 ? 'one call out: the hit is answered at once' : 'the hit waits for the batch out')
        gate.release()
        assert.deepEqual(await misses, missing.map(() => null))
        assert.equal((await hit).data.n, 1)
        const after = store.stats().readCache
        assert.deepEqual([after.hits - before.hits, after.misses - before.misses], [1, out])
        assert.equal(proxy.sent.filter((s) => s.includes(id)).length, 0, 'the hit sent nothing')
        proxy.holdAnswered = () => null
      }
    } finally {
      await store.close()
      await proxy.stop()
    }
  })

  it('returns the result of this store\'s own write, resolved or still in flight', async () => {
    const store = redis.store({ readCache: true })
    const id = newId()
    await store.set(id, session(id, { v: 1 }), TTL)
    await store.get(id)
    // In flight: the get waits behind the write.
    let write = store.set(id, session(id, { v: 2 }), TTL)
    assert.equal((await store.get(id)).data.v, 2)
    await write
    assert.equal((await store.get(id)).data.v, 2)
    write = store.merge(id, { 'data.v': 3 }, TTL)
    assert.equal((await store.get(id)).data.v, 3)
    await write
    assert.equal((await store.get(id)).data.v, 3)
    // Two writes in flight, then a get: the last write's result.
    const w1 = store.merge(id, { 'data.v': 4 }, TTL)
    const w2 = store.set(id, session(id, { v: 5 }), TTL)
    assert.equal((await store.get(id)).data.v, 5)
    await Promise.all([w1, w2])
    write = store.delete(id)
    assert.equal(await store.get(id), null)
    await write
    assert.equal(await store.get(id), null)
    // A touch keeps the text; a get after it is right either way.
    await store.set(id, session(id, { v: 6 }), TTL)
    write = store.touch(id, TTL)
    assert.equal((await store.get(id)).data.v, 6)
    assert.equal(await write, true)
    assert.equal((await store.get(id)).data.v, 6)
  })

  it('is never served past its ttl, whoever wrote it', async () => {
    const store = redis.store({ readCache: true })
    const writer = redis.store({ readCache: true })
    const [mine, theirs] = [newId(), newId()]
    await store.set(mine, session(mine), 300)
    await writer.set(theirs, session(theirs), 300)
    assert.ok(await store.get(mine))
    assert.ok(await store.get(theirs)) // read here with its ttl (PTTL)
    const before = store.stats().readCache.hits
    assert.ok(await store.get(theirs))
    assert.equal(hitsSince(store, before), 1)
    await sleep(350)
    assert.equal(await store.get(mine), null)
    assert.equal(await store.get(theirs), null)
  })

  it('is never served once the key is deleted, expired, changed, flushed or evicted on the server', async () => {
    const store = redis.store({ readCache: true })
    await tracking(store)
    const ids = Array.from({ length: 6 }, newId)
    for (const id of ids) await store.set(id, session(id, { v: 1 }), TTL)
    for (const id of ids) await store.get(id)
    const reported = store.stats().readCache.invalidations
    await redis.admin.del(`sess:${ids[0]}`)
    await redis.admin.pexpire(`sess:${ids[1]}`, 1)
    await redis.admin.set(`sess:${ids[2]}`, JSON.stringify(session(ids[2], { v: 2 })), 'PX', TTL)
    // The three reports (the PEXPIRE's among them) have come back.
    await until(() => store.stats().readCache.invalidations >= reported + 3, 5000, 'three reports')
    await until(async () => (await redis.admin.exists(`sess:${ids[1]}`)) === 0, 5000, 'the key expired')
    assert.equal(await store.get(ids[0]), null)
    assert.equal(await store.get(ids[1]), null)
    assert.equal((await store.get(ids[2])).data.v, 2)
    assert.ok(store.stats().readCache.invalidations >= 3)
    const flushes = store.stats().readCache.flushes
    for (const flush of ['flushdb', 'flushall']) {
      for (const id of ids) await store.set(id, session(id), TTL)
      const before = store.stats().readCache.flushes
      await redis.admin[flush]()
      await until(() => store.stats().readCache.flushes > before, 5000, `the report of ${flush}`)
      for (const id of ids) assert.equal(await store.get(id), null, flush)
    }
    assert.ok(store.stats().readCache.flushes >= flushes + 2)
  })

  it('is never served once the server evicted the key', async () => {
    const server = await startRedis({ args: ['--maxmemory', '4mb', '--maxmemory-policy', 'allkeys-lru'] })
    const store = createRedisSessionStore({ url: server.url, rememberedTextBytes: 64 << 20, readCache: true })
    const admin = new Redis({ port: server.port, host: '127.0.0.1' })
    try {
      const ids = Array.from({ length: 400 }, newId)
      const big = (id) => session(id, { pad: 'x'.repeat(20_000) })
      for (const id of ids) await store.set(id, big(id), TTL)
      const evictedKeys = async () => Number((await admin.info('stats')).match(/evicted_keys:(\d+)/)[1])
      const evicted = await evictedKeys()
      assert.ok(evicted > 0, 'the server evicted keys')
      let found = 0
      for (const id of ids) if (await store.get(id)) found++
      // The gets' replies take memory too: on a slow machine the server may
      // evict a few more keys while they run. None evicted before is found.
      const evictedAfter = await evictedKeys()
      assert.ok(found <= ids.length - evicted, `${found} found, ${evicted} evicted before the gets`)
      assert.ok(found >= ids.length - evictedAfter, `${found} found, ${evictedAfter} evicted after`)
      // An eviction a store's own write causes is not reported to it
      // (NOLOOP): on a server that may evict, the cache answers no get.
      assert.equal(store.stats().readCache.tracking, 'evicting')
      assert.equal(store.stats().readCache.hits, 0)
    } finally {
      admin.disconnect()
      await store.close()
      await server.stop()
    }
  })

  it('lock and isLocked always ask the server', async () => {
    const store = redis.store({ readCache: true })
    const id = newId()
    await store.set(id, session(id), TTL)
    assert.equal(await store.isLocked(id), false)
    await redis.admin.set(`sess:lock:${id}`, 'someone', 'PX', TTL)
    assert.equal(await store.isLocked(id), true)
    assert.equal(await store.lock(id, TTL), false)
    await redis.admin.del(`sess:lock:${id}`)
    assert.equal(await store.isLocked(id), false)
    assert.equal(await store.lock(id, TTL), true)
  })
})

// With userIdPath too: ending a user's sessions takes back the tickets of
// reads in flight, as a delete does, so a read that crossed the ending never
// keeps the ended session (a security hole before: "log out everywhere"
// failed in the process that did it).
describe('with userIdPath', answers, () => {
  it('a session ended by destroyUserSessions is never served again, whatever get was in flight', async () => {
    const store = redis.store({ readCache: true, userIdPath: 'data.userId' })
    const other = redis.store({ userIdPath: 'data.userId' })
    await tracking(store)
    const rounds = Number(process.env.ENDED_ROUNDS ?? 300)
    let served = 0
    for (let round = 0; round < rounds; round++) {
      const user = `u-${newId()}`
      const ids = [newId(), newId(), newId()]
      // Written by another store: this one reads them, so its gets cross.
      for (const id of ids) await other.set(id, { ...session(id), data: { userId: user } }, TTL)
      let ending = true
      const ended = store.destroyUserSessions(user).finally(() => (ending = false))
      // Gets of the sessions in flight throughout the call, each round trip
      // landing somewhere between its reads and its compare-and-deletes.
      const reads = ids.map(async (id) => {
        while (ending) {
          await store.get(id)
          await new Promise(setImmediate)
        }
      })
      assert.equal(await ended, ids.length)
      await Promise.all(reads)
      for (const id of ids) {
        assert.equal(await redis.admin.exists(`sess:${id}`), 0)
        if ((await store.get(id)) !== null) served++
      }
    }
    assert.equal(served, 0, `${served} ended sessions served from memory`)
  })
})

// The rule the README states: once the writer's call resolved, a store in
// another process told so reads the new text, idle or busy. The reader
// serves a text only when its socket has nothing unread and its connection's
// task handled all it read; while a batch of it is out, its gets ask Redis.
describe("another store's writes", answers, () => {
  for (const busy of ['idle', 'busy']) {
    it(`are seen by a store in another process as soon as the writer says so: 0 stale reads in ${ROUNDS.toLocaleString('en')} rounds (${busy})`, async () => {
      const writer = redis.store({ readCache: true })
      const { stale, stats } = await staleReads(writer, { url: redis.server.url, busy, rounds: ROUNDS })
      assert.equal(stale, 0, `${stale} stale reads`)
      // The reader held the text between rounds: each read after a write
      // found it dropped by the server's report, not served.
      assert.ok(stats.invalidations >= ROUNDS - 1, JSON.stringify(stats))
    })
  }

  // What holds for every other writer (README, "Read cache"): its change is
  // seen once the server's report of it has come, which it always does. The
  // reader holds the session, the writer changes it, the reader waits for
  // the report (its invalidations counter, with a deadline: an event, not a
  // time) and then reads the change, never the text it held.
  it('from any kind of writer are reported, and read once the report has come', async () => {
    const reader = redis.store({ readCache: true, userIdPath: 'data.userId' })
    const plain = redis.store({ readCache: false, userIdPath: 'data.userId' })
    const other = redis.store({ readCache: true, userIdPath: 'data.userId' })
    const key = (id) => `sess:${id}`
    const text = (id, v) => JSON.stringify({ ...session(id, { v }), data: { v, userId: `w-${id}` } })
    /** @type {[string, (id: string) => Promise<unknown>, number | null][]} */
    const writers = [
      ['a plain SET', (id) => redis.admin.set(key(id), text(id, 2), 'PX', TTL), 2],
      ['an EVAL that sets', (id) => redis.admin.eval("return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])", 1, key(id), text(id, 2), TTL), 2],
      ['a DEL', (id) => redis.admin.del(key(id)), null],
      ['an EVAL that deletes', (id) => redis.admin.eval("return redis.call('DEL', KEYS[1])", 1, key(id)), null],
      ['a store without the cache merging', (id) => plain.merge(id, { 'data.v': 2 }, TTL), 2],
      ["a caching store's delete", (id) => other.delete(id), null],
      ["a caching store's destroyUserSessions", (id) => other.destroyUserSessions(`w-${id}`), null],
    ]
    for (const [name, write, expected] of writers) {
      const id = newId()
      await plain.set(id, JSON.parse(text(id, 1)), TTL) // in its user's index too
      await reader.get(id) // read: held, and tracked
      const before = reader.stats().readCache.hits
      assert.equal((await reader.get(id)).data.v, 1)
      assert.equal(reader.stats().readCache.hits, before + 1, `${name}: held before the write`)
      const reports = reader.stats().readCache.invalidations
      await write(id)
      await until(() => reader.stats().readCache.invalidations > reports, 5000, `${name}: reported`)
      const got = await reader.get(id)
      assert.equal(got === null ? null : got.data.v, expected, name)
    }
  })
})

describe('the link', answers, () => {
  it('a lost connection drops every text before the next hit: a write made meanwhile is seen', async () => {
    const store = redis.store({ readCache: true })
    const id = newId()
    for (let round = 0; round < 5; round++) {
      await store.set(id, session(id, { round }), TTL)
      assert.equal((await store.get(id)).data.round, round)
      // The store's connection is killed, and the session changed, before
      // the store connects again.
      await redis.admin.client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes')
      await redis.admin.set(`sess:${id}`, JSON.stringify(session(id, { round: -1 })), 'PX', TTL)
      let got = null
      for (let i = 0; i < 100 && got === null; i++) got = await store.get(id).catch(() => sleep(20).then(() => null))
      assert.equal(got.data.round, -1)
    }
  })

  it('a server restarted in its place: nothing held from before is served', async () => {
    const first = await startRedis()
    const store = createRedisSessionStore({ url: first.url, readCache: true })
    try {
      const id = newId()
      await store.set(id, session(id), TTL)
      assert.ok(await store.get(id))
      await first.stop()
      const second = await startRedis({ port: first.port })
      try {
        let got
        for (let i = 0; i < 100; i++) {
          got = await store.get(id).then((s) => ({ s }), (e) => ({ e }))
          if (!got.e) break
          await sleep(20)
        }
        assert.equal(got.s, null, 'the new server has no session')
      } finally {
        await second.stop()
      }
    } finally {
      await store.close()
    }
  })

  it('a connection gone silent stops the hits within 1.5 s; a get then waits for the server', async () => {
    const server = await startRedis()
    const store = createRedisSessionStore({ url: server.url, commandTimeout: 300, readCache: true })
    try {
      const id = newId()
      await store.set(id, session(id), TTL)
      assert.ok(await store.get(id))
      server.signal('SIGSTOP')
      await sleep(FRESH_FOR_MS + 100) // past FRESH_FOR_MS since the last answer: a lower bound, longer on a slow machine
      await rejectsWith(store.get(id), 'ERR_TIMEOUT')
      server.signal('SIGCONT')
    } finally {
      server.signal('SIGCONT')
      await store.close()
      await server.stop()
    }
  })

  it('an idle link is kept fresh (pinged): a store idle for 3 s still answers from memory', async () => {
    const store = redis.store({ readCache: true })
    const id = newId()
    await store.set(id, session(id), TTL)
    // Idle for twice FRESH_FOR_MS: without the pings the link would be stale
    // and a get would go to the server. A get that meets a ping in flight
    // (its reply not read yet) goes to the server too, rightly, and its
    // answer makes the link fresh: then the test waits again, as long, and
    // asks again. On a working store the first get is a hit but for that
    // chance; on one that does not ping, every get misses.
    let hit = false
    for (let attempt = 0; attempt < 4 && !hit; attempt++) {
      await sleep(2 * FRESH_FOR_MS)
      const before = store.stats().readCache.hits
      assert.ok(await store.get(id))
      hit = hitsSince(store, before) === 1
    }
    assert.ok(hit, 'no get after an idle spell was answered from memory')
  })

  it('a report handled before the reply it follows (the race of client-side caching) never lets the older text in', async () => {
    // The proxy holds the reply to the reader's get (the older text), the
    // session is changed meanwhile, and the server's report of that change,
    // on the reports connection, is handled by the reader first: the reply
    // with the older text is let through only then.
    const { proxy, reader, id } = await readerBehindProxy()
    try {
      const gate = holdFirst(proxy, (data) => data.includes('"v":1'))
      const read = reader.get(id)
      await until(() => gate.held, 5000, "the get's reply was held")
      const reported = reader.stats().readCache.invalidations
      await redis.admin.set(`sess:${id}`, JSON.stringify(session(id, { v: 2 })), 'PX', TTL)
      await until(() => reader.stats().readCache.invalidations > reported, 5000, 'the report was handled')
      gate.release()
      assert.equal((await read).data.v, 1, 'the read ran before the change')
      const before = reader.stats().readCache.hits
      assert.equal((await reader.get(id)).data.v, 2, 'the older text was not kept')
      assert.equal(hitsSince(reader, before), 0)
    } finally {
      await reader.close()
      await proxy.stop()
    }
  })

  it("a report that comes after the answer to the store's own question (written after the writer's reply) is never outrun by a hit", async () => {
    // Redis writes a turn's replies client by client; a reports connection
    // with an answer due in that turn is written after a writer's reply (seen
    // with strace, README "Read cache"). The proxy plays that order: it holds
    // the answer to the store's heartbeat question, and the report of a change
    // made meanwhile waits behind it, while the writer has its reply. A get
    // then must not be answered from memory.
    const { proxy, reader, id } = await readerBehindProxy()
    try {
      assert.equal((await reader.get(id)).data.v, 1)
      await until(async () => (await reader.get(id)).data.v === 1 && reader.stats().readCache.hits > 0, 5000, 'a hit')
      const gate = holdFirst(proxy, (data) => data.includes('tracking-table-max-keys'))
      await until(() => gate.held, 5000, 'the answer to the next heartbeat was held')
      await redis.admin.set(`sess:${id}`, JSON.stringify(session(id, { v: 2 })), 'PX', TTL)
      const before = reader.stats().readCache.hits
      assert.equal((await reader.get(id)).data.v, 2, 'the older text was served')
      assert.equal(hitsSince(reader, before), 0)
      gate.release()
      await until(async () => (await reader.get(id)).data.v === 2 && hitsSince(reader, before) > 0, 5000, 'hits again once the answer came')
    } finally {
      await reader.close()
      await proxy.stop()
    }
  })
})


// Events no server reports to the store (or to any client): the store asks
// every heartbeat (0.5 s), and drops its texts or stands aside when it sees
// one. The deadlines below are generous bounds for that look, not timings.
describe('what the server does not report', answers, () => {
  it('a SWAPDB: every text goes at the next look, and the swapped-in session is read', async () => {
    const store = redis.store({ readCache: true })
    const id = newId()
    await store.set(id, session(id, { db: 0 }), TTL)
    const before = store.stats().readCache.hits
    assert.equal((await store.get(id)).data.db, 0)
    assert.equal(hitsSince(store, before), 1)
    const db1 = new Redis({ port: redis.server.port, host: '127.0.0.1', db: 1 })
    try {
      await db1.set(`sess:${id}`, JSON.stringify(session(id, { db: 1 })), 'PX', TTL)
      const flushes = store.stats().readCache.flushes
      await redis.admin.swapdb(0, 1)
      await until(() => store.stats().readCache.flushes > flushes, 5000, 'the store saw the SWAPDB')
      assert.equal((await store.get(id)).data.db, 1)
      // And once more, back: the count moved again.
      await store.get(id)
      const again = store.stats().readCache.flushes
      await redis.admin.swapdb(0, 1)
      await until(() => store.stats().readCache.flushes > again, 5000, 'the store saw the second SWAPDB')
      assert.equal((await store.get(id)).data.db, 0)
    } finally {
      await db1.flushdb()
      db1.disconnect()
    }
  })

  it('a maxmemory set at run time: the store stands aside, and what its own writes evicted before it looked is not served', async () => {
    const server = await startRedis({ args: ['--maxmemory-policy', 'allkeys-lru'] })
    const store = createRedisSessionStore({ url: server.url, rememberedTextBytes: 64 << 20, readCache: true })
    const admin = new Redis({ port: server.port, host: '127.0.0.1' })
    try {
      const big = (id) => session(id, { pad: 'x'.repeat(20_000) })
      const ids = Array.from({ length: 100 }, newId)
      for (const id of ids) await store.set(id, big(id), TTL)
      assert.equal(store.stats().readCache.tracking, 'on')
      const used = Number((await admin.info('memory')).match(/used_memory:(\d+)/)[1])
      await admin.config('SET', 'maxmemory', String(used + (1 << 20)))
      // The store's own writes evict at once, before its next look.
      const more = Array.from({ length: 200 }, newId)
      for (const id of more) await store.set(id, big(id), TTL)
      assert.ok(Number((await admin.info('stats')).match(/evicted_keys:(\d+)/)[1]) > 0, 'keys were evicted')
      await until(() => store.stats().readCache.tracking === 'evicting', 5000, "the store saw the server's maxmemory")
      const hits = store.stats().readCache.hits
      for (const id of [...ids, ...more]) {
        const stored = await admin.get(`sess:${id}`)
        const got = await store.get(id)
        assert.equal(got === null ? null : got.meta.id, stored === null ? null : id)
      }
      assert.equal(store.stats().readCache.hits, hits, 'no get answered from memory')
    } finally {
      admin.disconnect()
      await store.close()
      await server.stop()
    }
  })

  it('a tracking table past half its limit: the store stands aside, and keys the server dropped unreported are not served', async () => {
    const server = await startRedis({ args: ['--tracking-table-max-keys', '10'] })
    const store = createRedisSessionStore({ url: server.url, readCache: true })
    const admin = new Redis({ port: server.port, host: '127.0.0.1' })
    try {
      const ids = Array.from({ length: 50 }, newId)
      for (const id of ids) await store.set(id, session(id, { v: 1 }), TTL)
      for (const id of ids) await store.get(id)
      await until(() => store.stats().readCache.tracking === 'crowded', 5000, 'the store saw the crowded table')
      for (const id of ids) await admin.set(`sess:${id}`, JSON.stringify(session(id, { v: 2 })), 'PX', TTL)
      let stale = 0
      for (const id of ids) if ((await store.get(id)).data.v !== 2) stale++
      assert.equal(stale, 0)
      // Room again (no limit): the store answers from memory again.
      await admin.config('SET', 'tracking-table-max-keys', '0')
      await until(() => store.stats().readCache.tracking === 'on', 5000, 'the store came back')
      await store.get(ids[0])
      const hits = store.stats().readCache.hits
      assert.equal((await store.get(ids[0])).data.v, 2)
      assert.equal(store.stats().readCache.hits, hits + 1)
    } finally {
      admin.disconnect()
      await store.close()
      await server.stop()
    }
  })
})

// Redis 6.0 sends the report of a script's own write (swap.lua reads and
// writes the key it tracks) inside the reply of the transaction around it,
// which no client can read: there the cache stands aside, and says so.
describe('Redis before 6.2', { skip: beforeRedis62 ? false : 'a server the cache answers on' }, () => {
  it("the cache stands aside ('unsupported'): merges and gets work, every get goes to Redis, and the doctor says why", async () => {
    const store = redis.store({ readCache: true })
    const id = newId()
    await store.set(id, session(id, { v: 1 }), TTL)
    await store.merge(id, { 'data.v': 2 }, TTL)
    await store.merge(id, { 'data.w': 3 }, TTL)
    assert.equal((await store.get(id)).data.v, 2)
    await redis.admin.set(`sess:${id}`, JSON.stringify(session(id, { v: 4 })), 'PX', TTL)
    assert.equal((await store.get(id)).data.v, 4)
    const c = store.stats().readCache
    assert.deepEqual([c.tracking, c.hits], ['unsupported', 0])
    const check = (await store.doctor()).checks.find((x) => x.name === 'readCache')
    assert.equal(check.level, 'warn')
    assert.match(check.message, /before 6\.2.*stands aside/)
  })
})

describe('where the server does not track', () => {
  for (const refused of ['tracking', 'id']) {
  it(`a user the ACL refuses CLIENT ${refused.toUpperCase()}: every get goes to Redis, as without the cache`, async (t) => {
    // Subcommand rules (-client|tracking) came with Redis 7.0; before, the whole command.
    const subcommands = serverVersion.valkey || serverVersion.at >= 700
    if (!subcommands && refused === 'id') return t.skip('no subcommand rules before Redis 7.0: the tracking case refuses all of CLIENT')
    const user = refused === 'tracking' ? 'notrack' : 'noid' // the doctor's test below uses notrack
    await redis.admin.call('ACL', 'SETUSER', user, 'on', '>pw', '~*', '+@all', subcommands ? `-client|${refused}` : '-client')
    const store = redis.store({ username: user, password: 'pw', readCache: true })
    const id = newId()
    await store.set(id, session(id, { v: 1 }), TTL)
    assert.equal((await store.get(id)).data.v, 1)
    await redis.admin.set(`sess:${id}`, JSON.stringify(session(id, { v: 2 })), 'PX', TTL)
    assert.equal((await store.get(id)).data.v, 2)
    const c = store.stats().readCache
    // Where the cache stands aside anyway (Redis before 6.2), that is what it says.
    assert.equal(c.tracking, beforeRedis62 ? 'unsupported' : 'refused')
    assert.equal(c.hits, 0)
  })
  }

  it('readCache: false sends every get to Redis', async () => {
    const store = redis.store({ readCache: false })
    const id = newId()
    await store.set(id, session(id), TTL)
    await store.get(id)
    await store.get(id)
    assert.deepEqual([store.stats().readCache.tracking, store.stats().readCache.hits], ['off', 0])
  })

  it('the doctor says whether the cache answers gets, and what the server tracks', async () => {
    const doctor = async (store) => (await store.doctor()).checks.find((c) => c.name === 'readCache')
    const off = await doctor(redis.store({ readCache: false }))
    assert.equal(off.level, 'ok')
    assert.match(off.message, /^off: every get goes to Redis.*keys tracked for client-side caching \(tracking-table-max-keys/)
    const on = redis.store({ readCache: true })
    await on.get(newId())
    assert.match((await doctor(on)).message, beforeRedis62 ? /before 6\.2/ : /^on \(tracking on\)/)
    const refused = redis.store({ username: 'notrack', password: 'pw', readCache: true })
    await refused.get(newId())
    const r = await doctor(refused)
    assert.equal(r.level, 'warn')
    assert.match(r.message, beforeRedis62 ? /before 6\.2/ : /refused CLIENT TRACKING.*\+client\|tracking/)
  })

  it('a readCache that is not a boolean is refused, and nothing is written', async () => {
    const before = await redis.snapshot()
    for (const bad of ['yes', 1, null]) {
      assert.throws(() => createRedisSessionStore({ url: redis.server.url, readCache: bad }), (e) => e.code === 'ERR_INVALID_ARG' && /readCache/.test(e.message))
    }
    assert.deepEqual(await redis.snapshot(), before)
  })
})
