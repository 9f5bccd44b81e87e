import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { inspect } from 'node:util'
import { Cluster, Redis } from 'ioredis'
import { startRedis } from '../harness/redis-server.mjs'
import { createRedisSessionStore, newId, rejectsWith, session, useRedis } from './support/setup.mjs'

const redis = useRedis()

const invalid = (fn, message) => assert.throws(fn, (e) => e.code === 'ERR_INVALID_ARG' && message.test(e.message) && e.name === 'RedisSessionStoreError')

describe('options', () => {
  it('refuses an unknown option, naming it', () => {
    invalid(() => createRedisSessionStore({ host: 'x' }), /unknown option 'host'/)
    invalid(() => createRedisSessionStore({ url: 'redis://127.0.0.1', ttl: 5 }), /unknown option 'ttl'/)
  })

  it('refuses options of the wrong type', () => {
    invalid(() => createRedisSessionStore({ url: 6379 }), /options\.url must be a string, got number/)
    invalid(() => createRedisSessionStore({ prefix: null }), /options\.prefix must be a string, got null/)
    invalid(() => createRedisSessionStore({ lockPrefix: 1 }), /options\.lockPrefix must be a string/)
    invalid(() => createRedisSessionStore({ preloadScript: 'yes' }), /options\.preloadScript must be a boolean/)
    invalid(() => createRedisSessionStore({ connectTimeout: '100' }), /options\.connectTimeout must be a number/)
    invalid(() => createRedisSessionStore({ commandTimeout: [] }), /options\.commandTimeout must be a number, got an array/)
    invalid(() => createRedisSessionStore('redis://127.0.0.1'), /options must be a plain object/)
    invalid(() => createRedisSessionStore(null), /options must be a plain object/)
  })

  it('refuses values out of range', () => {
    invalid(() => createRedisSessionStore({ connectTimeout: 0 }), /options\.connectTimeout must be a number of ms greater than 0/)
    invalid(() => createRedisSessionStore({ commandTimeout: -5 }), /options\.commandTimeout/)
    invalid(() => createRedisSessionStore({ commandTimeout: NaN }), /options\.commandTimeout/)
    invalid(() => createRedisSessionStore({ lockPrefix: '' }), /options\.lockPrefix must not be empty/)
  })

  it('refuses topology options that do not fit, naming the option', () => {
    const nodes = ['redis://127.0.0.1:7000']
    invalid(() => createRedisSessionStore({ url: 'redis://127.0.0.1', cluster: { nodes } }), /only one of options\.url, options\.cluster and options\.sentinel/)
    invalid(() => createRedisSessionStore({ cluster: { nodes }, sentinel: { nodes, masterName: 'm' } }), /only one of/)
    invalid(() => createRedisSessionStore({ cluster: { nodes: [] } }), /options\.cluster\.nodes must be a non-empty array/)
    invalid(() => createRedisSessionStore({ cluster: {} }), /options\.cluster\.nodes/)
    invalid(() => createRedisSessionStore({ cluster: { nodes: ['127.0.0.1:7000'] } }), /options\.cluster\.nodes\[0\] must start with redis:\/\//)
    invalid(() => createRedisSessionStore({ cluster: { nodes: ['redis://a:1', 'rediss://b:1'] } }), /all use redis:\/\/ or all use rediss:\/\//)
    invalid(() => createRedisSessionStore({ cluster: { nodes }, db: 1 }), /options\.db cannot be used with options\.cluster/)
    invalid(() => createRedisSessionStore({ cluster: { nodes, seeds: 1 } }), /unknown option 'seeds' in options\.cluster/)
    invalid(() => createRedisSessionStore({ sentinel: { nodes } }), /options\.sentinel\.masterName must be a non-empty string/)
    invalid(() => createRedisSessionStore({ sentinel: { nodes: 'redis://x', masterName: 'm' } }), /options\.sentinel\.nodes must be a non-empty array/)
    invalid(() => createRedisSessionStore({ sentinel: { nodes: ['redis://x:1', 'rediss://y:1'], masterName: 'm' } }), /all use redis:\/\/ or all use rediss:\/\//)
    invalid(() => createRedisSessionStore({ sentinel: { nodes: ['redis://:hunter2@x:1'], masterName: 'm' } }), /options\.sentinel\.nodes\[0\] must be a URL without password.*options\.sentinel\.password/)
    invalid(() => createRedisSessionStore({ db: -1 }), /options\.db must be an integer from 0 to 2147483647, got -1/)
    invalid(() => createRedisSessionStore({ db: 1.5 }), /options\.db must be an integer/)
    invalid(() => createRedisSessionStore({ db: '1' }), /options\.db must be a number/)
    invalid(() => createRedisSessionStore({ tls: 'yes' }), /options\.tls must be a plain object/)
    invalid(() => createRedisSessionStore({ username: 7 }), /options\.username must be a string/)
  })

  it('username, password and db options override the URL', async () => {
    const server = await startRedis({ args: ['--requirepass', 'right'] })
    const store = createRedisSessionStore({ url: `redis://:wrong@127.0.0.1:${server.port}/1`, password: 'right', db: 4 })
    const admin = new Redis({ port: server.port, host: '127.0.0.1', password: 'right', db: 4 })
    try {
      const id = newId()
      await store.set(id, session(id), 60_000)
      assert.equal(await admin.exists(`sess:${id}`), 1)
    } finally {
      admin.disconnect()
      await store.close()
      await server.stop()
    }
  })

  it('refuses a URL that is not redis:// or rediss://, and never shows the password', () => {
    for (const url of ['http://user:hunter2@127.0.0.1', 'redis://user:hunter2@127.0.0.1:notaport', 'user:hunter2@127.0.0.1']) {
      assert.throws(
        () => createRedisSessionStore({ url }),
        (e) => e.code === 'ERR_INVALID_ARG' && /options\.url/.test(e.message) && !e.message.includes('hunter2'),
      )
    }
  })

  it('a second argument needs an ioredis client as the first', () => {
    invalid(() => createRedisSessionStore({ url: redis.server.url }, {}), /not an ioredis client/)
  })

  it('uses the db of the URL', async () => {
    const store = redis.store({ url: `${redis.server.url}/3` })
    const id = newId()
    await store.set(id, session(id), 60_000)
    assert.equal(await redis.admin.exists(`sess:${id}`), 0)
    const db3 = new Redis({ port: redis.server.port, host: '127.0.0.1', db: 3 })
    try {
      assert.equal(await db3.exists(`sess:${id}`), 1)
    } finally {
      db3.disconnect()
    }
  })

  it('util.inspect of a store shows where it connects, never a password', () => {
    const store = redis.store({ url: `redis://:hunter2@127.0.0.1:${redis.server.port}` })
    const shown = inspect(store, { showHidden: true, depth: 5 })
    assert.ok(!shown.includes('hunter2') && shown.includes(`redis://***@127.0.0.1:${redis.server.port}`), shown)
    // A password typed where the user name goes, and a user name: no part
    // of the user info is shown.
    for (const url of [`redis://hunter2@127.0.0.1:${redis.server.port}`, `redis://someuser:hunter2@127.0.0.1:${redis.server.port}`]) {
      const typo = inspect(redis.store({ url }), { showHidden: true, depth: 5 })
      assert.ok(!typo.includes('hunter2') && !typo.includes('someuser') && typo.includes(`redis://***@127.0.0.1:${redis.server.port}`), typo)
    }
    const others = [
      redis.store({ url: `redis://127.0.0.1:${redis.server.port}`, username: 'u', password: 'hunter2' }),
      createRedisSessionStore({ cluster: { nodes: ['redis://u:hunter2@127.0.0.1:1'] } }),
      createRedisSessionStore({
        sentinel: { nodes: ['redis://127.0.0.1:1'], masterName: 'm', password: 'hunter2' },
        password: 'hunter2',
      }),
    ]
    for (const s of others) {
      const text = inspect(s, { showHidden: true, depth: 5 }) + String(s)
      assert.ok(!text.includes('hunter2'), text)
    }
  })
})

describe('a server with a password', () => {
  it('connects with the password of the URL; a wrong one is ERR_AUTH and never shown', async () => {
    const server = await startRedis({ args: ['--requirepass', 's3cret p@ss:/'] })
    const good = createRedisSessionStore({ url: `redis://:${encodeURIComponent('s3cret p@ss:/')}@127.0.0.1:${server.port}` })
    const bad = createRedisSessionStore({ url: `redis://:hunter2@127.0.0.1:${server.port}` })
    try {
      const id = newId()
      await good.set(id, session(id), 60_000)
      assert.equal((await good.get(id)).meta.id, id)
      const err = await rejectsWith(bad.get(id), 'ERR_AUTH')
      assert.ok(!err.message.includes('hunter2') && !err.stack.includes('hunter2'), err.message)
    } finally {
      await good.close()
      await bad.close()
      await server.stop()
    }
  })

  it('an ACL user limited to sess:* keys and the commands the store uses', async () => {
    const commands = ['+get', '+set', '+del', '+exists', '+evalsha', '+script|load']
    const server = await startRedis({ args: ['--user', 'default', 'off', '--user', 'app', 'on', '>pw', '~sess:*', ...commands] })
    const store = createRedisSessionStore({ url: `redis://app:pw@127.0.0.1:${server.port}` })
    try {
      const id = newId()
      await store.set(id, session(id), 60_000)
      await store.merge(id, { 'data.a': 1 }, 60_000)
      assert.equal((await store.get(id)).data.a, 1)
      assert.equal(await store.lock(id, 5000), true)
      assert.equal(await store.isLocked(id), true)
      await store.unlock(id)
      assert.equal(await store.isLocked(id), false)
      await store.delete(id)
      assert.equal(await store.get(id), null)
    } finally {
      await store.close()
      await server.stop()
    }
  })
})

describe('migration form: createRedisSessionStore(ioredis, options)', () => {
  it('reads host, port, password and db from the ioredis client and opens its own connection', async () => {
    const server = await startRedis({ args: ['--requirepass', 'pw'] })
    const client = new Redis({ host: '127.0.0.1', port: server.port, password: 'pw', db: 2, lazyConnect: true })
    const store = createRedisSessionStore(client, { prefix: 'm:' })
    try {
      const id = newId()
      await store.set(id, session(id), 60_000)
      await client.connect()
      assert.equal(await client.exists(`m:${id}`), 1)
      assert.equal(client.status, 'ready') // the client itself was not taken over
    } finally {
      client.disconnect()
      await store.close()
      await server.stop()
    }
  })

  it("puts ioredis's keyPrefix in front of prefix, as the JS adapter's keys have it", async () => {
    const client = new Redis({ host: '127.0.0.1', port: redis.server.port, keyPrefix: 'app:', lazyConnect: true })
    const store = createRedisSessionStore(client)
    const id = newId()
    await store.set(id, session(id), 60_000)
    assert.equal(await redis.admin.exists(`app:sess:${id}`), 1)
    await store.close()
  })

  it('refuses what the store cannot do, with a clear error', () => {
    invalid(() => createRedisSessionStore(new Redis({ lazyConnect: true, path: '/tmp/redis.sock' })), /unix socket/)
    invalid(() => createRedisSessionStore(new Redis({ lazyConnect: true, tls: { ca: 'x' } })), /tls\.ca/)
    invalid(() => createRedisSessionStore(new Redis({ lazyConnect: true }), { url: 'redis://x' }), /cannot be given with an ioredis instance/)
    invalid(() => createRedisSessionStore(new Redis({ lazyConnect: true }), { nope: 1 }), /unknown option 'nope'/)
    // TLS options beyond ca, cert and key (ones that loosen checks among
    // them) are refused rather than dropped.
    invalid(
      () => createRedisSessionStore(new Redis({ lazyConnect: true, tls: { rejectUnauthorized: false } })),
      /the ioredis instance sets tls\.rejectUnauthorized: only tls\.ca, tls\.cert and tls\.key are supported/,
    )
    invalid(() => createRedisSessionStore(new Redis({ lazyConnect: true, tls: { servername: 'x' } })), /sets tls\.servername/)
    invalid(
      () => createRedisSessionStore(new Redis({ lazyConnect: true, sentinels: [{ host: '127.0.0.1', port: 26379 }], name: 'm', tls: {} })),
      /uses Sentinel with TLS, which the store does not support/,
    )
    const cluster = new Cluster([{ host: '127.0.0.1', port: 7000 }], { lazyConnect: true })
    invalid(() => createRedisSessionStore(/** @type {any} */ (cluster)), /an ioredis Cluster is not supported here: pass options\.cluster/)
  })
})
