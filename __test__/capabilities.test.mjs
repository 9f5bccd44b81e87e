// Native compare-and-set and compare-and-delete: the store uses them where the
// server has them (Redis >= 8.4: SET IFDEQ, DELEX; Valkey >= 8.1: SET IFEQ;
// Valkey >= 9.0: DELIFEQ), the Lua scripts elsewhere, and falls back to the
// scripts when a server refuses a native command. Runs on whatever server the
// suite runs on (npm run test:matrix runs it on each), and on the cluster.
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { before, describe, it } from 'node:test'
import { Redis } from 'ioredis'
import { createRedisSessionStore, msUntilSuccess, newId, onCluster, session, useRedis } from './support/setup.mjs'
import { startProxy } from '../harness/proxy.mjs'
import { findRedisServer, startRedis } from '../harness/redis-server.mjs'
import { startCluster } from '../harness/cluster.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const redis = useRedis()
const TTL = 60_000

/**
 * The commands the store should send on a server, from the servers' own
 * documentation (the oracle; src/link/capabilities.rs is what is tested).
 * @param {{name: string, version: number[]}} s
 */
function expectedCommands(s) {
  const at = (major, minor) => s.version[0] > major || (s.version[0] === major && s.version[1] >= minor)
  if (s.name === 'redis' && at(8, 4)) return { swap: 'digest', release: 'delex' }
  if (s.name === 'valkey' && at(9, 0)) return { swap: 'equal', release: 'delifeq' }
  if (s.name === 'valkey' && at(8, 1)) return { swap: 'equal', release: 'script' }
  return { swap: 'script', release: 'script' }
}

/** Name and version of a server from `INFO server`. */
function serverOf(info) {
  const field = (k) => new RegExp(`^${k}:(.*)$`, 'm').exec(info)?.[1]?.trim()
  const name = field('server_name') ?? 'redis'
  const version = (field(`${name}_version`) ?? field('redis_version') ?? '0.0.0').split('.').map(Number)
  return { name, version }
}

/** Name and version of a server binary from its `--version`. */
function binaryServer(bin) {
  const v = execFileSync(bin, ['--version'], { encoding: 'utf8' })
  return { name: /^valkey/i.test(v) ? 'valkey' : 'redis', version: (/v=([\d.]+)/.exec(v)?.[1] ?? '0.0.0').split('.').map(Number) }
}

const masters = () => (redis.cluster ? redis.admin.nodes('master') : [redis.admin])

/** Calls per command since the last reset, summed over the masters. */
async function commandCalls() {
  const calls = {}
  for (const node of masters()) {
    for (const m of (await node.info('commandstats')).matchAll(/^cmdstat_([\w|]+):calls=(\d+)/gm)) {
      calls[m[1]] = (calls[m[1]] ?? 0) + Number(m[2])
    }
  }
  return calls
}
const resetStats = () => Promise.all(masters().map((n) => n.config('RESETSTAT')))

/** A request's calls on a session: save, read, merge (with the text just read), lock, unlock. */
async function requestCalls(store, id) {
  await store.set(id, session(id), TTL)
  await store.get(id)
  await store.merge(id, { 'data.user.name': 'Grace' }, TTL)
  assert.equal(await store.lock(id, 5000), true)
  await store.unlock(id)
}

/** One merge and one lock/unlock, so that the scripts are loaded before counting (a NOSCRIPT reply counts as a call). */
async function warmUp(store) {
  const id = newId()
  await store.set(id, session(id), TTL)
  await store.merge(id, { 'data.flags.beta': false }, TTL)
  await store.lock(id, 5000)
  await store.unlock(id)
}

/** The stored session of `id`, parsed. */
const stored = async (id) => JSON.parse(await redis.admin.get(`sess:${id}`))

let server
let expected
before(async () => {
  await redis.ready()
  server = serverOf(await masters()[0].info('server'))
  expected = expectedCommands(server)
})

describe('native compare-and-set and compare-and-delete', () => {
  it('merges and unlocks send the commands the server has: no script where a native command exists', async () => {
    const store = redis.store()
    const ids = Array.from({ length: 20 }, newId)
    for (const id of ids) await store.set(id, session(id), TTL)
    await warmUp(store)
    await resetStats()
    const served = store.stats().readCache.hits
    for (const id of ids) {
      await store.get(id)
      await store.merge(id, { 'data.user.name': 'Grace', 'data.cart': [1] }, TTL)
      assert.equal(await store.lock(id, 5000), true)
      await store.unlock(id)
    }
    const calls = await commandCalls()
    const n = ids.length
    const swapScript = expected.swap === 'script' ? n : 0
    const releaseScript = expected.release === 'script' ? n : 0
    assert.equal(calls.evalsha ?? 0, swapScript + releaseScript, JSON.stringify(calls))
    // The store's own gets (but those the read cache answered), and the
    // scripts' GET: a merge of a text the store has just read sends no read
    // of its own (a digest that did not match the stored bytes would make it
    // read).
    const sent = n - (store.stats().readCache.hits - served)
    assert.equal(calls.get ?? 0, sent + swapScript + releaseScript, JSON.stringify(calls))
    assert.equal(calls.delex ?? 0, expected.release === 'delex' ? n : 0)
    assert.equal(calls.delifeq ?? 0, expected.release === 'delifeq' ? n : 0)
    for (const id of ids) {
      const s = await stored(id)
      assert.deepEqual([s.data.user.name, s.data.cart], ['Grace', [1]])
      assert.equal(await store.isLocked(id), false)
    }
  })

  it('a compare-and-set matches the stored bytes of any text: empty to 40 KB, multibyte, escapes', async () => {
    const store = redis.store()
    const texts = ['', 'a', 'ü', '😀'.repeat(3), 'x'.repeat(15), 'y'.repeat(200), 'line\nbreak "quoted" \\ tab\t',
      'é'.repeat(1000), 'z'.repeat(40_000), '日本語のテキスト'.repeat(500)]
    const ids = texts.map(() => newId())
    for (const [i, id] of ids.entries()) await store.set(id, session(id, { note: texts[i] }), TTL)
    await warmUp(store)
    await resetStats()
    const served = store.stats().readCache.hits
    for (const id of ids) {
      await store.get(id)
      await store.merge(id, { 'data.flags.beta': false }, TTL)
    }
    const calls = await commandCalls()
    const swapScript = expected.swap === 'script' ? ids.length : 0
    const sent = ids.length - (store.stats().readCache.hits - served)
    assert.equal(calls.get ?? 0, sent + swapScript, 'no merge read the text again')
    for (const [i, id] of ids.entries()) {
      const s = await stored(id)
      assert.equal(s.data.note, texts[i])
      assert.equal(s.data.flags.beta, false)
    }
  })

  it('a merge or unlock of a key that is gone creates nothing; an unlock of a lock taken over leaves it', async () => {
    const store = redis.store()
    const id = newId()
    await store.set(id, session(id), TTL)
    await store.get(id) // the store has the text: its merge goes straight to the compare-and-set
    await redis.admin.del(`sess:${id}`)
    await store.merge(id, { 'data.user.name': 'Grace' }, TTL)
    assert.equal(await redis.admin.exists(`sess:${id}`), 0)
    assert.equal(await store.lock(id, 5000), true)
    await redis.admin.del(`sess:lock:${id}`)
    await store.unlock(id)
    assert.equal(await redis.admin.exists(`sess:lock:${id}`), 0)
    assert.equal(await store.lock(id, 5000), true)
    await redis.admin.set(`sess:lock:${id}`, 'another-holder', 'PX', 5000) // expired and taken by another
    await store.unlock(id)
    assert.equal(await redis.admin.get(`sess:lock:${id}`), 'another-holder')
  })
})

describe('ACL users, and falling back to the scripts', { skip: onCluster && 'standalone: a proxy and ACL users' }, () => {
  it('a server that claims commands it lacks: each native command is refused once, then the scripts run', async (t) => {
    if (expected.swap === 'digest') return t.skip('the server has the commands it would claim')
    try {
      await redis.admin.call('HELLO')
    } catch {
      return t.skip('HELLO wants an argument here (Redis 6.0): there is no reply to rewrite')
    }
    const proxy = await startProxy(redis.server.port)
    try {
      // HELLO's reply, rewritten: "server" redis, "version" 8.6.0.
      proxy.rewrite = (data) => {
        const text = data.toString('latin1')
        const hello = /\$6\r\nserver\r\n\$\d+\r\n\w+\r\n\$7\r\nversion\r\n\$\d+\r\n[\d.]+\r\n/
        if (!hello.test(text)) return data
        return Buffer.from(text.replace(hello, '$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n8.6.0\r\n'), 'latin1')
      }
      proxy.sent = []
      const store = redis.store({ url: proxy.url })
      const ids = Array.from({ length: 10 }, newId)
      for (const id of ids) {
        await requestCalls(store, id)
      }
      const sent = proxy.sent.join('')
      assert.equal(sent.match(/IFDEQ/g)?.length, 1, 'IFDEQ sent once')
      assert.equal(sent.match(/DELEX/g)?.length, 1, 'DELEX sent once')
      for (const id of ids) {
        assert.equal((await stored(id)).data.user.name, 'Grace')
        assert.equal(await redis.admin.exists(`sess:lock:${id}`), 0)
      }
    } finally {
      await proxy.stop()
    }
  })

  it("the README's ACL user (session keys, the commands listed, +hello and the native unlock) runs no script where the server has the commands", async () => {
    const native = { delex: ['+delex'], delifeq: ['+delifeq'], script: [] }[expected.release]
    await redis.admin.call('ACL', 'SETUSER', 'readme-app', 'on', '>pw', '~sess:*',
      '+get', '+set', '+del', '+exists', '+evalsha', '+script|load', '+select', '+hello', ...native)
    const store = redis.store({ username: 'readme-app', password: 'pw' })
    await warmUp(store)
    await resetStats()
    const ids = Array.from({ length: 5 }, newId)
    for (const id of ids) {
      await requestCalls(store, id)
      assert.equal((await stored(id)).data.user.name, 'Grace')
      assert.equal(await redis.admin.exists(`sess:lock:${id}`), 0)
    }
    const calls = await commandCalls()
    const scripts = (expected.swap === 'script' ? ids.length : 0) + (expected.release === 'script' ? ids.length : 0)
    assert.equal(calls.evalsha ?? 0, scripts, JSON.stringify(calls))
  })

  it('a user whose ACL lacks the native unlock command unlocks through the script', async (t) => {
    if (expected.release === 'script') return t.skip('the server has no native compare-and-delete')
    const command = expected.release === 'delex' ? 'delex' : 'delifeq'
    await redis.admin.call('ACL', 'SETUSER', 'no-native', 'on', '>pw', '~*', '&*', '+@all', `-${command}`)
    const store = redis.store({ username: 'no-native', password: 'pw' })
    await warmUp(store)
    await resetStats()
    const ids = Array.from({ length: 5 }, newId)
    for (const id of ids) {
      assert.equal(await store.lock(id, 5000), true)
      await store.unlock(id)
      assert.equal(await redis.admin.exists(`sess:lock:${id}`), 0)
    }
    const calls = await commandCalls()
    assert.equal(calls.evalsha, ids.length, JSON.stringify(calls))
  })
})

/** A server binary other than the suite's whose commands differ from it, if one is here. */
function otherServer() {
  const first = findRedisServer()
  const has = expectedCommands(binaryServer(first))
  const candidates = [
    path.join(root, '.servers/redis-8.6/redis-server'),
    path.join(root, '.servers/valkey-9.1/valkey-server'),
    '/usr/bin/redis-server',
  ]
  const second = candidates.find(
    (bin) => existsSync(bin) && JSON.stringify(expectedCommands(binaryServer(bin))) !== JSON.stringify(has),
  )
  return { first, has, second }
}

describe('servers of different versions', { skip: onCluster && 'standalone: starts its own servers' }, () => {
  it('a cluster where one master refuses the native unlock: that unlock falls back to the script, every lock is released', async (t) => {
    if (expected.release === 'script') return t.skip('the server has no native compare-and-delete')
    const command = expected.release === 'delex' ? 'delex' : 'delifeq'
    const cluster = await startCluster()
    const admin = cluster.admin()
    try {
      await admin.connect()
      // One master refuses the command to the default user (NOPERM), as a
      // master of another version would refuse it as unknown.
      const refusing = admin.nodes('master')[2]
      await refusing.call('ACL', 'SETUSER', 'default', `-${command}`)
      const store = createRedisSessionStore({ cluster: { nodes: cluster.urls } })
      redis.stores.push(store)
      const ids = Array.from({ length: 30 }, newId) // on every master
      for (const id of ids) {
        await requestCalls(store, id)
      }
      const stats = await refusing.info('commandstats')
      assert.match(stats, /^cmdstat_evalsha:calls=[1-9]/m, 'the refusing master ran the unlock script')
      for (const id of ids) {
        assert.equal(JSON.parse(await admin.get(`sess:${id}`)).data.user.name, 'Grace')
        assert.equal(await admin.exists(`sess:lock:${id}`), 0)
      }
    } finally {
      admin.disconnect()
      await cluster.stop()
    }
  })

  it('after a restart on another version, the store asks again and uses what the new server has', async (t) => {
    const { first, has, second } = otherServer()
    if (!second) return t.skip('no second server with other commands (npm run test:matrix builds them)')
    const wants = expectedCommands(binaryServer(second))
    let a = await startRedis({ bin: first })
    const proxy = await startProxy(a.port)
    const store = redis.store({ url: proxy.url })
    const admin = () => new Redis({ port: a.port, host: '127.0.0.1', lazyConnect: true })
    const round = async () => {
      const id = newId()
      await requestCalls(store, id)
      const check = admin()
      assert.equal(JSON.parse(await check.get(`sess:${id}`)).data.user.name, 'Grace')
      check.disconnect()
    }
    const sentNative = () => {
      const sent = proxy.sent.join('')
      return { swap: /IFDEQ/.test(sent) ? 'digest' : /IFEQ/.test(sent) ? 'equal' : 'script',
        release: /DELEX/.test(sent) ? 'delex' : /DELIFEQ/.test(sent) ? 'delifeq' : 'script' }
    }
    try {
      proxy.sent = []
      await round()
      assert.deepEqual(sentNative(), has)
      const port = a.port
      await a.stop()
      a = await startRedis({ bin: second, port })
      await msUntilSuccess(() => store.get(newId()), 5000)
      proxy.sent = []
      await round()
      assert.deepEqual(sentNative(), wants)
    } finally {
      await proxy.stop()
      await a.stop()
    }
  })
})
