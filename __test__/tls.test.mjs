// TLS with a CA and certificates generated here with openssl; a server that
// asks for client certificates; an untrusted certificate is refused.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { inspect } from 'node:util'
import { Redis } from 'ioredis'
import { assertWithinBound, createRedisSessionStore, newId, rejectsWith, session } from './support/setup.mjs'
import { freePort, serverHasTls, startRedis } from '../harness/redis-server.mjs'
import { certificates } from '../harness/certs.mjs'
import { staleReads } from './support/stale-reads.mjs'

const certs = certificates()
const { file, pem, makeCa, makeCert } = certs
let server
let tlsPort
let mutual
let mutualPort

before(async () => {
  if (!serverHasTls()) return
  makeCa('ca')
  makeCa('rogue')
  makeCert('server', 'ca', 'redis-test', 'serverAuth')
  makeCert('client', 'ca', 'app', 'clientAuth')
  makeCert('rogue-client', 'rogue', 'intruder', 'clientAuth')
  const tlsArgs = (port, authClients) => [
    '--tls-port', String(port),
    '--tls-cert-file', file('server.crt'),
    '--tls-key-file', file('server.key'),
    '--tls-ca-cert-file', file('ca.crt'),
    '--tls-auth-clients', authClients,
  ]
  tlsPort = await freePort()
  server = await startRedis({ args: tlsArgs(tlsPort, 'no') })
  mutualPort = await freePort()
  mutual = await startRedis({ args: tlsArgs(mutualPort, 'yes') })
})
after(async () => {
  await server?.stop()
  await mutual?.stop()
  certs.remove()
})

async function roundTrip(store) {
  const id = newId()
  await store.set(id, session(id), 60_000)
  await store.merge(id, { 'data.tls': true }, 60_000)
  assert.equal((await store.get(id)).data.tls, true)
  assert.equal(await store.lock(id, 5000), true)
  await store.unlock(id)
  await store.delete(id)
}

describe('TLS', { skip: serverHasTls() ? false : 'this redis-server was built without TLS' }, () => {
  it('rediss:// with the CA given as options.tls.ca (PEM string or Buffer)', async () => {
    for (const ca of [pem('ca.crt'), readFileSync(file('ca.crt'))]) {
      const store = createRedisSessionStore({ url: `rediss://127.0.0.1:${tlsPort}`, tls: { ca } })
      await roundTrip(store)
      await store.close()
    }
  })

  it('also by host name, when the certificate names it', async () => {
    const store = createRedisSessionStore({ url: `rediss://localhost:${tlsPort}`, tls: { ca: pem('ca.crt') } })
    await roundTrip(store)
    await store.close()
  })

  it('a server certificate from a CA the store does not trust is refused, and nothing is written', async () => {
    // Trusting only the rogue CA: the server's certificate is not trusted.
    const store = createRedisSessionStore({ url: `rediss://127.0.0.1:${tlsPort}`, tls: { ca: pem('rogue.crt') } })
    const err = await rejectsWith(store.set('x', session('x'), 60_000), 'ERR_CONNECTION')
    assert.match(err.message, /certificate|UnknownIssuer|invalid peer/i)
    await store.close()
    // Without a CA option the system's roots are used: not trusted either.
    const system = createRedisSessionStore({ url: `rediss://127.0.0.1:${tlsPort}` })
    await rejectsWith(system.get('x'), 'ERR_CONNECTION')
    await system.close()
    const check = createRedisSessionStore({ url: `rediss://127.0.0.1:${tlsPort}`, tls: { ca: pem('ca.crt') } })
    assert.equal(await check.get('x'), null)
    await check.close()
  })

  it('plain redis:// to a TLS port fails with a coded error, not a hang', async () => {
    const deadlines = { connectTimeout: 1000, commandTimeout: 500 }
    const store = createRedisSessionStore({ url: `redis://127.0.0.1:${tlsPort}`, ...deadlines })
    const t0 = Date.now()
    await assert.rejects(store.get('x'), (e) => ['ERR_CONNECTION', 'ERR_TIMEOUT'].includes(e.code))
    assertWithinBound(Date.now() - t0, deadlines)
    await store.close()
  })

  it('a server that asks for client certificates: accepted with cert and key, refused without or with a rogue one', async () => {
    const url = `rediss://127.0.0.1:${mutualPort}`
    const good = createRedisSessionStore({ url, tls: { ca: pem('ca.crt'), cert: pem('client.crt'), key: pem('client.key') } })
    await roundTrip(good)
    await good.close()
    const none = createRedisSessionStore({ url, tls: { ca: pem('ca.crt') }, commandTimeout: 500 })
    await assert.rejects(none.get('x'), (e) => ['ERR_CONNECTION', 'ERR_TIMEOUT'].includes(e.code))
    await none.close()
    const rogue = createRedisSessionStore({
      url,
      tls: { ca: pem('ca.crt'), cert: pem('rogue-client.crt'), key: pem('rogue-client.key') },
      commandTimeout: 500,
    })
    await assert.rejects(rogue.get('x'), (e) => ['ERR_CONNECTION', 'ERR_TIMEOUT'].includes(e.code))
    await rogue.close()
  })

  it("the migration form: an ioredis client's tls.ca, tls.cert and tls.key become the store's TLS, to a server that asks for client certificates", async () => {
    const client = new Redis({
      host: '127.0.0.1',
      port: mutualPort,
      // ioredis takes a CA list too; the store joins it.
      tls: { ca: [pem('ca.crt')], cert: pem('client.crt'), key: readFileSync(file('client.key')) },
      lazyConnect: true,
    })
    const store = createRedisSessionStore(client)
    assert.match(inspect(store), /rediss:\/\/127\.0\.0\.1/)
    await roundTrip(store)
    await store.close()
    // Without the client certificate, the same server refuses it.
    const none = createRedisSessionStore(new Redis({ host: '127.0.0.1', port: mutualPort, tls: { ca: pem('ca.crt') }, lazyConnect: true }), { commandTimeout: 500 })
    await assert.rejects(none.get('x'), (e) => ['ERR_CONNECTION', 'ERR_TIMEOUT'].includes(e.code))
    await none.close()
    client.disconnect()
  })

  it('the read cache over TLS: held sessions are answered from memory; a change is reported, and seen by another process as soon as the writer says so', async () => {
    const tls = { ca: pem('ca.crt') }
    const url = `rediss://127.0.0.1:${tlsPort}`
    const store = createRedisSessionStore({ url, tls, readCache: true })
    const admin = new Redis({ port: server.port, host: '127.0.0.1' })
    try {
      await roundTrip(store)
      const id = newId()
      await store.set(id, session(id), 60_000)
      for (let i = 0; i < 100 && store.stats().readCache.tracking !== 'on'; i++) await store.get(id)
      assert.equal(store.stats().readCache.tracking, 'on')
      const hits = store.stats().readCache.hits
      assert.equal((await store.get(id)).meta.id, id)
      assert.equal(store.stats().readCache.hits, hits + 1)
      // Another client's change: once its report came over TLS, the held
      // text is dropped and the next get reads the change.
      const reports = store.stats().readCache.invalidations
      await admin.set(`sess:${id}`, JSON.stringify(session(id, { changed: true })), 'PX', 60_000)
      for (let i = 0; i < 200 && store.stats().readCache.invalidations === reports; i++) await sleep(5)
      assert.equal(store.stats().readCache.invalidations, reports + 1)
      assert.equal((await store.get(id)).data.changed, true)
      // The stale-read rule of read-cache.test.mjs, over TLS: this store
      // writes, tells the reader process through a pipe, the reader reads.
      const rounds = 2000
      const { stale, stats } = await staleReads(store, { url, busy: 'idle', rounds, options: { tls } })
      assert.equal(stale, 0, `${stale} stale reads`)
      assert.ok(stats.invalidations >= rounds - 1, JSON.stringify(stats))
    } finally {
      admin.disconnect()
      await store.close()
    }
  })

  it('the read cache over TLS with client certificates', async () => {
    const url = `rediss://127.0.0.1:${mutualPort}`
    const store = createRedisSessionStore({ url, tls: { ca: pem('ca.crt'), cert: pem('client.crt'), key: pem('client.key') }, readCache: true })
    try {
      await roundTrip(store)
      const id = newId()
      await store.set(id, session(id), 60_000)
      for (let i = 0; i < 100 && store.stats().readCache.hits === 0; i++) await store.get(id)
      assert.equal(store.stats().readCache.tracking, 'on')
      assert.ok(store.stats().readCache.hits > 0)
    } finally {
      await store.close()
    }
  })

  it('an ACL user (options.username / password) limited to sess:* and the needed commands, on db 2, over TLS', async () => {
    const admin = new Redis({ port: server.port, host: '127.0.0.1' })
    try {
      await admin.call('ACL', 'SETUSER', 'app', 'on', '>s3cret', '~sess:*',
        '+get', '+set', '+del', '+exists', '+evalsha', '+script|load', '+select')
      const options = { url: `rediss://127.0.0.1:${tlsPort}`, tls: { ca: pem('ca.crt') }, username: 'app', db: 2 }
      const store = createRedisSessionStore({ ...options, password: 's3cret' })
      await roundTrip(store)
      const id = newId()
      await store.set(id, session(id), 60_000)
      await admin.select(2)
      assert.equal(await admin.exists(`sess:${id}`), 1)
      await store.close()
      const wrong = createRedisSessionStore({ ...options, password: 'hunter2' })
      const err = await rejectsWith(wrong.get('x'), 'ERR_AUTH')
      assert.ok(!err.message.includes('hunter2') && !inspect(wrong).includes('hunter2'), err.message)
      await wrong.close()
    } finally {
      admin.disconnect()
    }
  })

  it('refuses bad TLS options at creation, naming the option', () => {
    const url = `rediss://127.0.0.1:${tlsPort}`
    const bad = [
      [{ url, tls: { ca: 'not a certificate' } }, /options\.tls\.ca must be PEM/],
      [{ url, tls: { cert: pem('client.crt') } }, /options\.tls\.cert and options\.tls\.key/],
      [{ url, tls: { ca: 42 } }, /options\.tls\.ca must be PEM text/],
      [{ url, tls: { servername: 'x' } }, /unknown option 'servername'/],
      [{ url: `redis://127.0.0.1:${tlsPort}`, tls: { ca: pem('ca.crt') } }, /rediss/],
    ]
    for (const [options, message] of bad) {
      assert.throws(() => createRedisSessionStore(options), (e) => e.code === 'ERR_INVALID_ARG' && message.test(e.message))
    }
  })
})
