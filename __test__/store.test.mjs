import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { freePort, startRedis } from '../harness/redis-server.mjs'
import { assertNotBefore, assertWithin, assertWithinBound, createRedisSessionStore, newId, rejectsWith, session, useRedis } from './support/setup.mjs'

const redis = useRedis()

describe('get, set, delete', () => {
  it('stores the session as JSON text under <prefix><id> with PX ttl', async () => {
    const store = redis.store()
    const id = newId()
    const s = session(id)
    await store.set(id, s, 60_000)
    assert.equal(await redis.admin.get(`sess:${id}`), JSON.stringify(s))
    const pttl = await redis.admin.pttl(`sess:${id}`)
    assert.ok(pttl > 59_000 && pttl <= 60_000, `pttl ${pttl}`)
    assert.deepEqual(await store.get(id), s)
  })

  it('rounds a fractional ttl up to whole ms', async () => {
    const store = redis.store()
    const id = newId()
    await store.set(id, session(id), 0.2)
    const pttl = await redis.admin.pttl(`sess:${id}`)
    assert.ok(pttl === 1 || pttl === 0 || pttl === -2, `pttl ${pttl}`) // at most 1 ms left, or already gone
  })

  it('get of a missing session is null', async () => {
    assert.equal(await redis.store().get(newId()), null)
  })

  it('set replaces the whole session', async () => {
    const store = redis.store()
    const id = newId()
    await store.set(id, session(id, { a: 1 }), 60_000)
    await store.set(id, session(id, { b: 2 }), 60_000)
    const got = await store.get(id)
    assert.equal(got.data.a, undefined)
    assert.equal(got.data.b, 2)
  })

  it('delete removes the session and its lock', async () => {
    const store = redis.store()
    const id = newId()
    await store.set(id, session(id), 60_000)
    assert.equal(await store.lock(id, 5000), true)
    await store.delete(id)
    assert.equal(await redis.admin.exists(`sess:${id}`, `sess:lock:${id}`), 0)
    assert.equal(await store.get(id), null)
    assert.equal(await store.isLocked(id), false)
  })

  it('accepts any non-empty string as an id', async () => {
    const store = redis.store()
    for (const id of ['x', 'a b', 'ünï©ødé 😀', 'with:colons', '"quoted"', 'x'.repeat(1000)]) {
      await store.set(id, session(id), 60_000)
      assert.deepEqual((await store.get(id)).meta.id, id)
      await store.delete(id)
      assert.equal(await store.get(id), null)
    }
  })

  it('keeps the key layout of custom prefixes', async () => {
    const store = redis.store({ prefix: 'app:s:', lockPrefix: 'L:' })
    const id = newId()
    await store.set(id, session(id), 60_000)
    await store.lock(id, 5000)
    assert.equal(await redis.admin.exists(`app:s:${id}`), 1)
    assert.equal(await redis.admin.exists(`app:s:L:${id}`), 1)
  })

  it('the rotated-away form round-trips', async () => {
    const store = redis.store()
    const id = newId()
    const rotated = { data: null, meta: { redirectTo: newId() } }
    await store.set(id, rotated, 5000)
    assert.deepEqual(await store.get(id), rotated)
  })
})

describe('get of stored text that is not a session', () => {
  for (const [name, text] of [
    ['not JSON', '{"data":'],
    ['not JSON, with data V8 would quote', '{"data":secret-value}'],
    ['an array', '[1,2]'],
    ['a string', '"x"'],
    ['null', 'null'],
  ]) {
    it(`rejects ${name} with ERR_CORRUPT_SESSION, names neither the id nor the data, and leaves it as it was`, async () => {
      const store = redis.store()
      const id = newId()
      await redis.admin.set(`sess:${id}`, text)
      const err = await rejectsWith(store.get(id), 'ERR_CORRUPT_SESSION', 'the stored session is not')
      assert.ok(!err.message.includes(id) && !err.message.includes('secret'), err.message)
      assert.equal(await redis.admin.get(`sess:${id}`), text)
    })
  }

  it('rejects bytes that are not UTF-8 with ERR_CORRUPT_SESSION', async () => {
    const store = redis.store()
    const id = newId()
    await redis.admin.set(`sess:${id}`, Buffer.from([0x7b, 0xff, 0x7d]))
    await rejectsWith(store.get(id), 'ERR_CORRUPT_SESSION', 'UTF-8')
  })

  it('never returns an object with a changed prototype', async () => {
    const store = redis.store()
    const id = newId()
    await redis.admin.set(`sess:${id}`, '{"__proto__":{"polluted":true},"data":{"constructor":{"prototype":{"x":1}}},"meta":{}}')
    const got = await store.get(id)
    assert.equal(Object.getPrototypeOf(got), Object.prototype)
    assert.equal(got.polluted, undefined)
    assert.deepEqual(Object.keys(got), ['__proto__', 'data', 'meta'])
    assert.equal({}.polluted, undefined)
  })
})

describe('close', () => {
  it('lets calls in flight finish, then rejects new calls with ERR_CLOSED', async () => {
    const store = createRedisSessionStore({ url: redis.server.url })
    const id = newId()
    const writes = Array.from({ length: 50 }, (_, i) => store.set(`${id}-${i}`, session(id), 60_000))
    await store.close()
    await Promise.all(writes)
    assert.equal(await redis.admin.exists(`sess:${id}-49`), 1)
    await rejectsWith(store.get(id), 'ERR_CLOSED')
    await rejectsWith(store.merge(id, { 'data.a': 1 }, 1000), 'ERR_CLOSED')
    await store.close() // a second close is harmless
  })

  it('a store that is never used closes at once, without connecting', async () => {
    const connections = async () => Number(/total_connections_received:(\d+)/.exec(await redis.admin.info('stats'))[1])
    const before = await connections()
    const store = createRedisSessionStore({ url: redis.server.url })
    await store.close()
    assert.equal(store.status, 'closed')
    assert.equal(await connections(), before)
    // A store that was used did connect (so that the count can tell).
    const used = createRedisSessionStore({ url: redis.server.url })
    await used.ping()
    await used.close()
    assert.ok((await connections()) > before)
  })
})

describe('faults', () => {
  it('a server that is not there rejects with ERR_CONNECTION, within connectTimeout', async () => {
    const port = await freePort()
    // A long commandTimeout: a call that waited for it would show.
    const deadlines = { connectTimeout: 1000, commandTimeout: 10_000 }
    const store = createRedisSessionStore({ url: `redis://127.0.0.1:${port}`, ...deadlines })
    for (const call of ['first', 'second']) {
      const t0 = Date.now()
      await rejectsWith(store.get('x'), 'ERR_CONNECTION')
      assertWithin(Date.now() - t0, deadlines.connectTimeout, 'connectTimeout', `the ${call} call`)
    }
    await store.close()
  })

  it('a stalled server rejects with ERR_TIMEOUT, and calls work again once it resumes', async () => {
    const server = await startRedis()
    const deadlines = { connectTimeout: 1000, commandTimeout: 300 }
    const store = createRedisSessionStore({ url: server.url, ...deadlines })
    try {
      const id = newId()
      await store.set(id, session(id), 60_000)
      server.signal('SIGSTOP')
      const t0 = Date.now()
      // A session the read cache does not hold: the get goes to the server.
      await rejectsWith(store.get(newId()), 'ERR_TIMEOUT')
      const took = Date.now() - t0
      assertNotBefore(took, deadlines.commandTimeout)
      assertWithinBound(took, deadlines)
      server.signal('SIGCONT')
      let got = null
      for (let i = 0; i < 40 && !got; i++) got = await store.get(id).catch(() => sleep(50).then(() => null))
      assert.equal(got.meta.id, id)
    } finally {
      server.signal('SIGCONT')
      await store.close()
      await server.stop()
    }
  })

  it('reconnects after the server restarts, and the merge reloads its script', async () => {
    const server = await startRedis()
    const store = createRedisSessionStore({ url: server.url })
    try {
      const id = newId()
      await store.set(id, session(id), 60_000)
      await store.merge(id, { 'data.n': 1 }, 60_000)
      await server.stop()
      await rejectsWith(store.get(id), 'ERR_CONNECTION')
      const again = await startRedis({ port: server.port })
      try {
        let ok = false
        for (let i = 0; i < 40 && !ok; i++) ok = await store.set(id, session(id), 60_000).then(() => true, () => sleep(50).then(() => false))
        assert.ok(ok, 'no reconnect')
        await store.merge(id, { 'data.n': 2 }, 60_000) // the new server has no script cached
        assert.equal((await store.get(id)).data.n, 2)
      } finally {
        await again.stop()
      }
    } finally {
      await store.close()
    }
  })
})

describe('the merge script', () => {
  it('is reloaded transparently after SCRIPT FLUSH', async () => {
    const store = redis.store()
    const id = newId()
    await store.set(id, session(id), 60_000)
    await store.merge(id, { 'data.a': 1 }, 60_000)
    await redis.admin.script('FLUSH')
    await store.merge(id, { 'data.b': 2 }, 60_000)
    const got = await store.get(id)
    assert.equal(got.data.a, 1)
    assert.equal(got.data.b, 2)
  })

  it('preloadScript loads it when the store is created', async () => {
    await redis.admin.script('FLUSH')
    const { MERGE_SHA } = await import('../harness/scripts.mjs')
    redis.store({ preloadScript: true })
    let loaded = 0
    for (let i = 0; i < 40 && !loaded; i++) {
      ;[loaded] = await redis.admin.script('EXISTS', MERGE_SHA)
      if (!loaded) await sleep(25)
    }
    assert.equal(loaded, 1)
  })

  it('a failed preload is not an unhandled rejection, and the first merge loads the script', async () => {
    const unhandled = []
    const onUnhandled = (e) => unhandled.push(e)
    process.on('unhandledRejection', onUnhandled)
    const port = await freePort()
    const store = createRedisSessionStore({ url: `redis://127.0.0.1:${port}`, preloadScript: true })
    await sleep(300)
    const server = await startRedis({ port })
    try {
      const id = newId()
      let ok = false
      for (let i = 0; i < 40 && !ok; i++) ok = await store.set(id, session(id), 60_000).then(() => true, () => sleep(50).then(() => false))
      await store.merge(id, { 'data.z': true }, 60_000)
      assert.equal((await store.get(id)).data.z, true)
      assert.deepEqual(unhandled, [])
    } finally {
      process.off('unhandledRejection', onUnhandled)
      await store.close()
      await server.stop()
    }
  })
})
