// Faults, each with a bound on how long it may take: a server that is down,
// stalled or killed, processes that never close their store, worker threads.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { Redis } from 'ioredis'
import {
  REVIVE_MAX_DELAY_MS,
  assertNotBefore,
  assertWithin,
  assertWithinBound,
  callBound,
  createRedisSessionStore,
  msUntilSuccess,
  newId,
  runNode,
  session,
} from './support/setup.mjs'
import { startRedis } from '../harness/redis-server.mjs'
import { startProxy } from '../harness/proxy.mjs'

const STORE = fileURLToPath(new URL('../store.js', import.meta.url))

/** Settles every promise; fails if any is still pending after `ms`. */
async function allSettleWithin(promises, ms) {
  let timer
  const bound = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`calls still pending after ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([Promise.allSettled(promises), bound])
  } finally {
    clearTimeout(timer)
  }
}

/** The codes of the rejections among settled results. */
const codes = (results) => new Set(results.filter((r) => r.status === 'rejected').map((r) => r.reason.code))

// The faults a store meets on its own connection, with the read cache off
// and on (then the store opens that connection itself: `readCache`).
for (const readCache of [false, true]) {
  const cache = readCache ? ' (read cache on)' : ''
  describe(`server down${cache}`, () => {
    // A down server refuses at once: calls reject within connectTimeout, far
    // inside a commandTimeout set long, so a call that queued behind
    // anything (a reconnect, the command deadline) would show.
    const deadlines = { connectTimeout: 1000, commandTimeout: 10_000 }
    it('200 calls at once all reject with ERR_CONNECTION within connectTimeout; after the server is back, calls work once the revive ping answers', async () => {
      const server = await startRedis()
      const store = createRedisSessionStore({ url: server.url, readCache, ...deadlines })
      try {
        const id = newId()
        await store.set(id, session(id), 60_000)
        await server.stop()
        const t0 = Date.now()
        const results = await allSettleWithin(
          Array.from({ length: 200 }, (_, i) => (i % 2 ? store.get(id) : store.merge(id, { 'data.i': i }, 60_000))),
          callBound(deadlines),
        )
        assert.deepEqual(codes(results), new Set(['ERR_CONNECTION']))
        assertWithin(Date.now() - t0, deadlines.connectTimeout, 'connectTimeout', '200 calls to a down server')
        // Still down a while later: each call still fails fast, nothing queues up.
        await sleep(700)
        const t1 = Date.now()
        await assert.rejects(store.get(id), { code: 'ERR_CONNECTION' })
        assertWithin(Date.now() - t1, deadlines.connectTimeout, 'connectTimeout', 'a later call to a down server')
        // An unlock of a lock this store never took needs no server: it resolves.
        await store.unlock(newId())
        const again = await startRedis({ port: server.port })
        try {
          // The store pings in the background, waiting at most
          // REVIVE_MAX_DELAY_MS between pings: a call works once one answers.
          const ms = await msUntilSuccess(() => store.set(id, session(id), 60_000), 2 * REVIVE_MAX_DELAY_MS)
          assertWithin(ms, REVIVE_MAX_DELAY_MS, 'the revive ping\'s longest wait', 'the first call to work again')
        } finally {
          await again.stop()
        }
      } finally {
        await store.close()
      }
    })

    it('reconnects in the background: once the server is back, the store is connected within the revive ping\'s longest wait, without a call', async () => {
      const server = await startRedis()
      const deadlines = { connectTimeout: 1000, commandTimeout: 1000 }
      const store = createRedisSessionStore({ url: server.url, readCache, ...deadlines })
      let again
      let admin
      try {
        const id = newId()
        await store.set(id, session(id), 60_000)
        await server.stop()
        await assert.rejects(store.get(id), { code: 'ERR_CONNECTION' })
        await sleep(1.5 * REVIVE_MAX_DELAY_MS) // down a while: the backoff has grown to its cap
        again = await startRedis({ port: server.port })
        admin = new Redis({ port: server.port, host: '127.0.0.1', connectionName: 'admin' })
        const t0 = Date.now()
        const storeClients = async () => (await admin.client('LIST')).split('\n').filter((l) => l && !l.includes('name=admin')).length
        let clients = 0
        while (clients < 1 && Date.now() - t0 < 2 * (REVIVE_MAX_DELAY_MS + deadlines.connectTimeout)) {
          await sleep(50)
          clients = await storeClients()
        }
        const ms = Date.now() - t0
        assert.ok(clients >= 1, `the store did not connect by itself within ${ms} ms`)
        // The next ping comes at most REVIVE_MAX_DELAY_MS after the server
        // is back, and connects within connectTimeout.
        assertWithin(ms, REVIVE_MAX_DELAY_MS + deadlines.connectTimeout, 'the revive ping\'s longest wait + connectTimeout', 'connecting again')
        // Calls work at once: the get opens no connection of its own.
        const opened = async () => Number(/total_connections_received:(\d+)/.exec(await admin.info('stats'))[1])
        const before = await opened()
        assert.equal((await store.get(id)), null) // a new, empty server
        assert.equal(await opened(), before, 'the get had to connect')
      } finally {
        admin?.disconnect()
        await store.close()
        await again?.stop()
      }
    })
  })

  describe(`stalled server (SIGSTOP)${cache}`, () => {
    it('100 calls in flight all reject with ERR_TIMEOUT, not before commandTimeout and within the call bound; after SIGCONT calls work', async () => {
      const server = await startRedis()
      const deadlines = { connectTimeout: 1000, commandTimeout: 400 }
      const store = createRedisSessionStore({ url: server.url, readCache, ...deadlines })
      try {
        const id = newId()
        await store.set(id, session(id), 60_000)
        server.signal('SIGSTOP')
        const t0 = Date.now()
        const results = await allSettleWithin(
          Array.from({ length: 100 }, (_, i) => (i % 3 ? store.get(id) : store.merge(id, { 'data.i': i }, 60_000))),
          2 * callBound(deadlines),
        )
        const took = Date.now() - t0
        assert.deepEqual(codes(results), new Set(['ERR_TIMEOUT']))
        assertNotBefore(took, deadlines.commandTimeout, '100 calls to a stalled server')
        assertWithinBound(took, deadlines, '100 calls to a stalled server')
        server.signal('SIGCONT')
        // The connection was not lost: the next call works, at once.
        await store.merge(id, { 'data.after': true }, 60_000)
        assert.equal((await store.get(id)).data.after, true)
      } finally {
        server.signal('SIGCONT')
        await store.close()
        await server.stop()
      }
    })
  })

  describe(`killed server (kill -9) under load${cache}`, () => {
    it('calls in flight settle with coded errors within the call bound; after a restart the merge reloads its script', async () => {
      const server = await startRedis()
      const deadlines = { connectTimeout: 1000, commandTimeout: 1000 }
      const store = createRedisSessionStore({ url: server.url, readCache, ...deadlines })
      try {
        const id = newId()
        await store.set(id, session(id), 60_000)
        await store.merge(id, { 'data.warm': 1 }, 60_000) // the script is cached, then lost with the server
        const inFlight = Array.from({ length: 300 }, (_, i) => store.merge(id, { [`data.k${i}`]: i }, 60_000))
        server.signal('SIGKILL')
        const t0 = Date.now()
        const results = await allSettleWithin(inFlight, 2 * callBound(deadlines))
        assertWithinBound(Date.now() - t0, deadlines, 'calls in flight to a killed server')
        // The kill comes before the batch leaves: calls were in flight, and
        // each one that failed says why with a code.
        assert.ok(results.some((r) => r.status === 'rejected'), 'no call was in flight when the server died')
        for (const c of codes(results)) assert.ok(['ERR_CONNECTION', 'ERR_TIMEOUT'].includes(c), c)
        const again = await startRedis({ port: server.port })
        try {
          await msUntilSuccess(() => store.set(id, session(id), 60_000), 2 * (REVIVE_MAX_DELAY_MS + callBound(deadlines)))
          await store.merge(id, { 'data.n': 2 }, 60_000)
          assert.equal((await store.get(id)).data.n, 2)
        } finally {
          await again.stop()
        }
      } finally {
        await store.close()
      }
    })
  })
}

describe('process lifecycle', () => {
  it('a script that never calls close() exits by itself once its calls are done', async () => {
    const server = await startRedis()
    try {
      const { code, out } = await runNode(
        `const { createRedisSessionStore } = require(${JSON.stringify(STORE)})
         const store = createRedisSessionStore({ url: '${server.url}' })
         store.set('a', { data: {}, meta: {} }, 60000)
           .then(() => store.merge('a', { 'data.x': 1 }, 60000))
           .then(() => store.get('a'))
           .then((s) => console.log(JSON.stringify(s.data)))`,
        5000,
      )
      assert.equal(code, 0, out)
      assert.equal(out.trim(), '{"x":1}')
    } finally {
      await server.stop()
    }
  })

  it('a script whose server is down also exits by itself, after its calls reject', async () => {
    const server = await startRedis()
    await server.stop()
    const { code, out } = await runNode(
      `const { createRedisSessionStore } = require(${JSON.stringify(STORE)})
       createRedisSessionStore({ url: '${server.url}' }).get('a').catch((e) => console.log(e.code))`,
      5000,
    )
    assert.equal(code, 0, out)
    assert.equal(out.trim(), 'ERR_CONNECTION')
  })

  it('stores work in worker threads; ending workers mid-calls leaves the others working', async () => {
    const server = await startRedis()
    const main = createRedisSessionStore({ url: server.url })
    const workerCode = `
      const { parentPort, workerData } = require('node:worker_threads')
      const { createRedisSessionStore } = require(workerData.store)
      const store = createRedisSessionStore({ url: workerData.url })
      let n = 0
      const loop = async () => {
        for (;;) {
          const id = workerData.name + ':' + (n++ % 50)
          await store.set(id, { data: { n }, meta: {} }, 60000)
          await store.merge(id, { 'data.m': n }, 60000)
          if (n === 200) parentPort.postMessage('busy')
          if (n >= workerData.rounds) break
        }
        await store.close()
        parentPort.postMessage('done ' + n)
      }
      loop().catch((e) => parentPort.postMessage('error ' + e.code + ' ' + e.message))`
    const start = (name, rounds) =>
      new Worker(workerCode, { eval: true, workerData: { store: STORE, url: server.url, name, rounds } })
    try {
      const survivor = start('survivor', 3000)
      const survivorDone = new Promise((resolve) => survivor.on('message', (m) => m !== 'busy' && resolve(m)))
      // Ten times, two workers ended with calls in flight (this once freed a
      // store under its own calls and aborted the process).
      for (let round = 0; round < 10; round++) {
        const doomed = [start(`doomed${round}a`, 1e9), start(`doomed${round}b`, 1e9)]
        await Promise.all(doomed.map((w) => new Promise((resolve) => w.on('message', (m) => m === 'busy' && resolve()))))
        await Promise.all(doomed.map((w) => w.terminate()))
      }
      assert.equal(await survivorDone, 'done 3000')
      const id = newId()
      await main.set(id, session(id), 60_000)
      assert.equal((await main.get(id)).meta.id, id)
    } finally {
      await main.close()
      await server.stop()
    }
  })
})

describe('error replies of a passing state, and redirections from a single server', () => {
  // A proxy turns the server's reply to one GET into the error reply a
  // server in that state sends; the code says what a caller should do.
  for (const [reply, code, words] of [
    ['-LOADING Redis is loading the dataset in memory', 'ERR_CONNECTION', /cannot serve the call for now \(LOADING\)/],
    ['-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.', 'ERR_CONNECTION', /\(BUSY\)/],
    ['-TRYAGAIN Multiple keys request during rehashing of slot', 'ERR_CONNECTION', /\(TRYAGAIN\)/],
    ['-CLUSTERDOWN The cluster is down', 'ERR_CONNECTION', /\(CLUSTERDOWN\)/],
    ['-MOVED 3999 127.0.0.1:6381', 'ERR_REDIS', /Redis Cluster node.*cluster option/],
    ['-ASK 3999 127.0.0.1:6381', 'ERR_REDIS', /Redis Cluster node.*cluster option/],
  ]) {
    it(`${reply.split(' ')[0].slice(1)} is ${code}`, async () => {
      const server = await startRedis()
      const proxy = await startProxy(server.port)
      // The proxy replaces a round's whole reply with one error: a round of
      // one command (the read cache would add its tracking check and a PTTL).
      const store = createRedisSessionStore({ url: proxy.url, readCache: false })
      try {
        await store.ping() // the connection opens unchanged
        proxy.rewrite = () => Buffer.from(`${reply}\r\n`)
        const err = await store.get(newId()).then(
          () => assert.fail('resolved'),
          (e) => e,
        )
        assert.equal(err.code, code, err.message)
        assert.match(err.message, words)
        assert.doesNotMatch(err.message, /the cluster could not reach/)
      } finally {
        await store.close()
        await proxy.stop()
        await server.stop()
      }
    })
  }
})
