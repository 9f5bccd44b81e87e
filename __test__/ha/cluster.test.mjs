// A 3-master Redis Cluster: merges keep going while slots move between
// masters (MOVED/ASK), and the scripts come back after a master loses them.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { createRedisSessionStore, msUntilSuccess, session } from '../support/setup.mjs'
import { startCluster } from '../../harness/cluster.mjs'

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

const SESSIONS = 300
const ids = Array.from({ length: SESSIONS }, (_, i) => `cluster-${i}`)

/** Merges to fresh paths of the sessions until `stop()`; records what was acknowledged. */
function mergeLoad(store, workers = 8) {
  let running = true
  const acked = new Map(ids.map((id) => [id, []]))
  const failures = []
  let n = 0
  const loops = Array.from({ length: workers }, async () => {
    while (running) {
      const id = ids[n % SESSIONS]
      const path = `k${n++}`
      try {
        await store.merge(id, { [`data.${path}`]: n }, 600_000)
        acked.get(id).push(path)
      } catch (e) {
        failures.push(`${e.code}: ${e.message}`)
      }
    }
  })
  return {
    acked,
    failures,
    count: () => n,
    async stop() {
      running = false
      await Promise.all(loops)
    },
  }
}

describe('Redis Cluster', () => {
  it('sessions spread over all three masters', async () => {
    const store = createRedisSessionStore({ cluster: { nodes: cluster.urls } })
    await Promise.all(ids.map((id) => store.set(id, session(id), 600_000)))
    const perNode = await Promise.all(admin.nodes('master').map((n) => n.dbsize()))
    assert.equal(perNode.length, 3)
    for (const count of perNode) assert.ok(count > SESSIONS / 10, `keys per master: ${perNode}`)
    await store.close()
  })

  it('merges during a resharding (slots moving between masters) lose nothing', async (t) => {
    const store = createRedisSessionStore({ cluster: { nodes: cluster.urls }, commandTimeout: 5000 })
    const load = mergeLoad(store)
    await sleep(300)
    const [a, b, c] = cluster.nodes.map((n) => n.port)
    const t0 = Date.now()
    await cluster.reshard(a, b, 2000)
    await cluster.reshard(b, c, 3000)
    await cluster.reshard(c, a, 1500)
    const reshardMs = Date.now() - t0
    await sleep(300)
    await load.stop()
    t.diagnostic(`${load.count()} merges during ${reshardMs} ms of resharding (6,500 slots moved), ${load.failures.length} failed`)
    assert.deepEqual(load.failures.slice(0, 5), [])
    let checked = 0
    for (const id of ids) {
      const stored = await store.get(id)
      for (const path of load.acked.get(id)) {
        assert.ok(path in stored.data, `${id}: acknowledged ${path} is missing`)
        checked++
      }
      assert.equal(stored.data.user.name, 'Ada', 'a path nobody merged changed')
    }
    t.diagnostic(`${checked} acknowledged paths all present`)
    await store.close()
  })

  it('an ACL user limited to sess:* and the commands the store needs (with CLUSTER SLOTS) is enough', async () => {
    const commands = ['+get', '+set', '+del', '+exists', '+evalsha', '+script|load', '+cluster|slots']
    await Promise.all(admin.nodes('master').map((n) => n.call('ACL', 'SETUSER', 'app', 'on', '>pw', '~sess:*', ...commands)))
    const store = createRedisSessionStore({ cluster: { nodes: cluster.urls }, username: 'app', password: 'pw' })
    await Promise.all(admin.nodes('master').map((n) => n.script('FLUSH')))
    for (const id of ids.slice(0, 30)) {
      await store.merge(id, { 'data.acl': 1 }, 600_000)
      assert.equal(await store.lock(id, 5000), true)
      assert.equal(await store.isLocked(id), true)
      await store.unlock(id)
      assert.equal((await store.get(id)).data.acl, 1)
    }
    await store.delete(ids[29])
    await store.set(ids[29], session(ids[29]), 600_000)
    await store.close()
  })

  it('merge and unlock reload their scripts after the masters lose them', async () => {
    const store = createRedisSessionStore({ cluster: { nodes: cluster.urls } })
    await Promise.all(ids.slice(0, 30).map((id) => store.merge(id, { 'data.before': 1 }, 600_000)))
    await Promise.all(ids.slice(0, 30).map((id) => store.lock(id, 60_000)))
    await Promise.all(admin.nodes('master').map((n) => n.script('FLUSH')))
    await Promise.all(ids.slice(0, 30).map((id) => store.merge(id, { 'data.after': 2 }, 600_000)))
    await Promise.all(ids.slice(0, 30).map((id) => store.unlock(id)))
    for (const id of ids.slice(0, 30)) {
      assert.equal((await store.get(id)).data.after, 2)
      assert.equal(await store.isLocked(id), false)
    }
    await store.close()
  })

  it('a master killed with kill -9: its calls reject fast with ERR_CONNECTION; after its restart they work again', async (t) => {
    const store = createRedisSessionStore({ cluster: { nodes: cluster.urls }, commandTimeout: 1000 })
    const slots = await admin.cluster('SLOTS')
    const portOf = (slot) => slots.find(([from, to]) => slot >= from && slot <= to)[2][1]
    const victim = 2
    const victimPort = cluster.nodes[victim].port
    const owned = []
    for (const id of ids) owned.push([id, portOf(await admin.cluster('KEYSLOT', `sess:${id}`))])
    const onVictim = owned.find(([, port]) => port === victimPort)[0]
    const elsewhere = owned.find(([, port]) => port !== victimPort)[0]
    await store.merge(onVictim, { 'data.warm': 1 }, 600_000)
    cluster.nodes[victim].signal('SIGKILL')
    const t0 = Date.now()
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => store.merge(onVictim, { 'data.x': 1 }, 600_000)))
    const downMs = Date.now() - t0
    const codes = new Set(results.map((r) => r.status === 'rejected' && r.reason.code))
    t.diagnostic(`calls to the killed master: ${[...codes].join(', ')} after ${downMs} ms`)
    assert.deepEqual([...codes], ['ERR_CONNECTION'])
    assert.ok(downMs < 1500, `${downMs} ms`)
    // The other masters keep serving.
    await store.merge(elsewhere, { 'data.y': 1 }, 600_000)
    await cluster.restart(victim)
    const ms = await msUntilSuccess(() => store.set(onVictim, session(onVictim), 600_000), 10_000, 100)
    t.diagnostic(`calls to the restarted master work again after ${ms} ms`)
    await store.merge(onVictim, { 'data.z': 3 }, 600_000) // empty script cache there
    assert.equal((await store.get(onVictim)).data.z, 3)
    await store.close()
  })
})
