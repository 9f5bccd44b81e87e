// Admin calls on 10,000 sessions: ids(), length(), clear() and touch(), on a
// single server and (npm run test:cluster) on every master of a 3-master
// cluster, leaving every key outside the prefix as it was.
import assert from 'node:assert/strict'
import { before, describe, it } from 'node:test'
import { Redis } from 'ioredis'
import { createRedisSessionStore, limits, newId, onCluster, rejectsWith, session, useRedis } from './support/setup.mjs'
import { startRedis } from '../harness/redis-server.mjs'

const redis = useRedis()
const TTL = 600_000
const SESSIONS = 10_000
const LOCKS = 100

const masters = () => (redis.cluster ? redis.admin.nodes('master') : [redis.admin])

/** Every key outside the store's keys, with its value: what must not change. */
async function outside(prefixes) {
  const found = {}
  for (const node of masters()) {
    for (const k of await node.keys('*')) {
      if (!prefixes.some((p) => k.startsWith(p))) found[k] = await node.get(k)
    }
  }
  return found
}

const dbsize = async () => (await Promise.all(masters().map((n) => n.dbsize()))).reduce((a, b) => a + b, 0)

/** Writes `n` sessions through the store, a thousand calls at a time; their ids. */
async function fill(store, n) {
  const ids = Array.from({ length: n }, () => newId())
  for (let i = 0; i < n; i += 1000) {
    await Promise.all(ids.slice(i, i + 1000).map((id) => store.set(id, session(id), TTL)))
  }
  return ids
}

describe(`admin calls on ${SESSIONS.toLocaleString('en-US')} sessions${redis.cluster ? ' (cluster)' : ''}`, () => {
  let store
  let ids
  let before_
  before(async () => {
    await redis.ready()
    store = redis.store()
    ids = await fill(store, SESSIONS)
    for (const id of ids.slice(0, LOCKS)) assert.equal(await store.lock(id, TTL), true)
    // Keys the store must leave alone: other prefixes, and names that only
    // look like ours.
    for (const k of ['other:1', 'sess', 'SESS:1', 'sesslock:1', 'xsess:1', 'lock:1']) await redis.admin.set(k, `keep-${k}`)
    before_ = await outside(['sess:'])
  })

  it('ids() yields every session once, lock keys left out, on every master', async () => {
    const seen = []
    for await (const id of store.ids()) seen.push(id)
    assert.equal(new Set(seen).size, SESSIONS)
    assert.deepEqual(new Set(seen), new Set(ids))
    const small = []
    for await (const id of store.ids({ count: 10 })) small.push(id)
    assert.equal(new Set(small).size, SESSIONS)
    if (redis.cluster) {
      // Sessions live on every master: walking one node would miss most.
      for (const node of masters()) assert.ok((await node.dbsize()) > SESSIONS / 10)
    }
  })

  it('ids() refuses a bad count before anything is sent', async () => {
    const keys = await dbsize()
    for (const count of [0, -1, 1.5, limits.MAX_SCAN_COUNT + 1, '10', NaN]) {
      await rejectsWith(store.ids({ count }).next(), 'ERR_INVALID_ARG', 'count')
    }
    await rejectsWith(store.ids({ cout: 10 }).next(), 'ERR_INVALID_ARG', "unknown option 'cout'")
    await rejectsWith(store.ids(null).next(), 'ERR_INVALID_ARG')
    assert.equal(await dbsize(), keys)
  })

  it('length() counts the sessions, not their locks', async () => {
    assert.equal(await store.length(), SESSIONS)
  })

  it('ping() answers from every master', async () => {
    const ms = await store.ping()
    assert.ok(typeof ms === 'number' && ms >= 0)
    assert.equal(store.status, 'ready')
  })

  it('touch() sets the time to live of an existing session and creates nothing', async () => {
    const id = ids[LOCKS + 1]
    assert.equal(await store.touch(id, 5000), true)
    const pttl = await redis.admin.pttl(`sess:${id}`)
    assert.ok(pttl > 0 && pttl <= 5000, `${pttl}`)
    const missing = newId()
    assert.equal(await store.touch(missing, 5000), false)
    assert.equal(await redis.admin.exists(`sess:${missing}`), 0)
    const keys = await dbsize()
    await rejectsWith(store.touch(id, 0), 'ERR_INVALID_ARG', 'ttlMs')
    await rejectsWith(store.touch(id, 'soon'), 'ERR_INVALID_ARG', 'ttlMs')
    await rejectsWith(store.touch('', 5000), 'ERR_INVALID_ARG', 'sessionId')
    assert.equal(await dbsize(), keys)
    assert.ok((await redis.admin.pttl(`sess:${id}`)) <= 5000, 'the refused calls left the ttl alone')
    await store.touch(id, TTL)
  })

  it('clear() removes every session and lock under the prefix, and nothing else', async () => {
    const removed = await store.clear()
    assert.equal(removed, SESSIONS + LOCKS)
    assert.equal(await store.length(), 0)
    assert.deepEqual(await outside(['sess:']), before_)
    assert.equal(await dbsize(), Object.keys(before_).length)
    assert.equal(await store.clear(), 0)
  })

  it('escapes glob characters of the prefix', async () => {
    const prefix = 'a*[b]?\\:'
    const globby = redis.store({ prefix })
    const mine = await fill(globby, 20)
    await globby.lock(mine[0], TTL)
    // Each decoy matches the prefix read as a glob pattern.
    const decoys = ['a-b-\\:1', 'aXYZb?\\:2', 'a*b]?\\:3', 'a*[b]X\\:4', 'a*[b]?:5']
    for (const k of decoys) await redis.admin.set(k, 'decoy')
    const seen = []
    for await (const id of globby.ids()) seen.push(id)
    assert.deepEqual(new Set(seen), new Set(mine))
    assert.equal(await globby.length(), 20)
    assert.equal(await globby.clear(), 21)
    for (const k of decoys) assert.equal(await redis.admin.get(k), 'decoy', k)
    for (const k of decoys) await redis.admin.del(k)
  })
})

describe('admin calls where the server or the options would make them wrong', { skip: onCluster }, () => {
  /** A server, an admin client on it and a cleanup. */
  async function withServer(args, fn) {
    const server = await startRedis({ args })
    const admin = new Redis({ port: server.port, host: '127.0.0.1' })
    const stores = []
    try {
      await fn(server, admin, (/** @type {any} */ o) => {
        const s = createRedisSessionStore({ url: server.url, ...o })
        stores.push(s)
        return s
      })
    } finally {
      await Promise.allSettled(stores.map((s) => s.close()))
      admin.disconnect()
      await server.stop()
    }
  }

  it('clear() falls back to DEL when UNLINK is renamed away', async () => {
    await withServer(['--rename-command', 'UNLINK', ''], async (server, admin, store) => {
      const s = store()
      const mine = await fill(s, 50)
      await s.lock(mine[0], TTL)
      await admin.set('other:1', 'keep')
      assert.equal(await s.clear(), 51)
      assert.equal(await s.length(), 0)
      assert.deepEqual(await admin.keys('*'), ['other:1'])
    })
  })

  it('clear() falls back to DEL for a user the ACL refuses UNLINK', async () => {
    await withServer([], async (server, admin, store) => {
      await admin.call('ACL', 'SETUSER', 'nounlink', 'on', '>pw', '~sess:*', '+@all', '-unlink')
      const s = store({ username: 'nounlink', password: 'pw' })
      await fill(s, 50)
      await admin.set('other:1', 'keep')
      assert.equal(await s.clear(), 50)
      assert.deepEqual(await admin.keys('*'), ['other:1'])
    })
  })

  it('refuses an empty prefix, which would reach every key of the database, and touch nothing', async () => {
    await withServer([], async (server, admin, store) => {
      const s = store({ prefix: '' })
      for (const k of ['billing:1', 'queue:jobs', 'audit-log']) await admin.set(k, `keep-${k}`)
      const id = newId()
      await s.set(id, session(id), TTL) // sessions themselves work with any prefix
      const before = await admin.keys('*')
      await rejectsWith(s.ids().next(), 'ERR_INVALID_ARG', 'non-empty prefix')
      await rejectsWith(s.length(), 'ERR_INVALID_ARG', 'non-empty prefix')
      await rejectsWith(s.clear(), 'ERR_INVALID_ARG', 'non-empty prefix')
      assert.deepEqual((await admin.keys('*')).sort(), before.sort())
      for (const k of ['billing:1', 'queue:jobs', 'audit-log']) assert.equal(await admin.get(k), `keep-${k}`)
    })
  })
})
