// The read cache on a 3-master Redis Cluster: hits served from every master,
// and no stale read across processes, idle, busy, and while slots move
// between masters under load (MIGRATE, SETSLOT: MOVED and ASK).
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { createRedisSessionStore, session, untilCacheServes } from '../support/setup.mjs'
import { staleReads } from '../support/stale-reads.mjs'
import { startCluster } from '../../harness/cluster.mjs'

const ROUNDS = Number(process.env.CACHE_ROUNDS ?? 1000)

let cluster
let admin
before(async () => {
  cluster = await startCluster()
  admin = cluster.admin()
  await admin.connect()
})
after(async () => {
  admin?.disconnect()
  await cluster?.stop()
})

const options = () => ({ cluster: { nodes: cluster.urls }, readCache: true })


describe('the read cache on Redis Cluster', () => {
  it('serves hits for sessions on all three masters', async () => {
    const store = createRedisSessionStore(options())
    const ids = Array.from({ length: 90 }, (_, i) => `cc-hits-${i}`)
    try {
      await Promise.all(ids.map((id) => store.set(id, session(id, { n: 1 }), 600_000)))
      const perNode = await Promise.all(admin.nodes('master').map((n) => n.dbsize()))
      for (const count of perNode) assert.ok(count > 10, `keys per master: ${perNode}`)
      await untilCacheServes(store, ids[0])
      for (const id of ids) await store.get(id) // read once: tracked
      const before = store.stats().readCache.hits
      for (const id of ids) assert.equal((await store.get(id)).data.n, 1)
      assert.equal(store.stats().readCache.hits - before, ids.length, 'every second read a hit')
      // Another client's write on each master is told to this store.
      await Promise.all(ids.map((id) => admin.set(`sess:${id}`, JSON.stringify(session(id, { n: 2 })))))
      await sleep(100)
      for (const id of ids) assert.equal((await store.get(id)).data.n, 2)
    } finally {
      await store.close()
    }
  })

  for (const busy of ['idle', 'busy']) {
    it(`no stale read across processes (${busy})`, async () => {
      const writer = createRedisSessionStore(options())
      try {
        const { stale, stats } = await staleReads(writer, {
          url: '',
          busy,
          rounds: ROUNDS,
          sessions: 16,
          options: { cluster: { nodes: cluster.urls } },
        })
        assert.equal(stale, 0, `${stale} stale reads`)
        // The reader held each text between its rounds, on every master: the
        // read after a write found it dropped by the server's report.
        assert.ok(stats.invalidations >= ROUNDS * 0.9, JSON.stringify(stats))
      } finally {
        await writer.close()
      }
    })
  }

  it('no stale read while slots move between masters under load', async () => {
    const writer = createRedisSessionStore(options())
    const [a, b] = cluster.nodes
    try {
      // 2,000 slots of master a to b and back, while the writer writes and
      // the reader (busy) reads: the slots of about one session in eight
      // move twice (of 64, none moving has odds of 0.03 %).
      const slotsOfA = async () => {
        const slots = await admin.cluster('SLOTS')
        const id = await cluster.id(a.port)
        return slots.filter((r) => r[2][2] === id).reduce((n, r) => n + r[1] - r[0] + 1, 0)
      }
      const count = await slotsOfA()
      const moving = (async () => {
        await sleep(300)
        await cluster.reshard(a.port, b.port, 2000)
        await cluster.agreed()
        await cluster.reshard(b.port, a.port, 2000)
        await cluster.agreed()
      })()
      const { stale, rounds, stats } = await staleReads(writer, {
        url: '',
        busy: 'busy',
        rounds: 200,
        sessions: 64,
        until: moving,
        options: { cluster: { nodes: cluster.urls } },
      })
      await moving
      assert.equal(await slotsOfA(), count, 'the slots came back')
      assert.equal(stale, 0, `stale reads in ${rounds} rounds`)
      // The reader held the texts, and heard of every change.
      assert.ok(stats.invalidations >= 1000, JSON.stringify(stats))
    } finally {
      await writer.close()
    }
  })

  for (const refused of ['tracking', 'id']) {
    it(`a user the ACL refuses CLIENT ${refused.toUpperCase()} on every master: every get goes to Redis`, async () => {
      const user = `cc-no${refused}`
      await Promise.all(
        admin.nodes('master').map((n) => n.call('ACL', 'SETUSER', user, 'on', '>pw', '~*', '+@all', `-client|${refused}`)),
      )
      const store = createRedisSessionStore({ ...options(), username: user, password: 'pw' })
      const id = `cc-acl-${refused}`
      try {
        await store.set(id, session(id, { v: 1 }), 600_000)
        // The heartbeat asks each master; it says so within a few.
        for (let i = 0; i < 100 && store.stats().readCache.tracking !== 'refused'; i++) {
          assert.equal((await store.get(id)).data.v, 1)
          await sleep(20)
        }
        await admin.set(`sess:${id}`, JSON.stringify(session(id, { v: 2 })))
        assert.equal((await store.get(id)).data.v, 2)
        assert.deepEqual([store.stats().readCache.tracking, store.stats().readCache.hits], ['refused', 0])
      } finally {
        await store.close()
      }
    })
  }
})
