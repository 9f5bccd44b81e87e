// A 3-master Redis Cluster: merges keep going while slots move between
// masters (MOVED/ASK), and the scripts come back after a master loses them.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { assertWithinBound, createRedisSessionStore, msUntilSuccess, session } from '../support/setup.mjs'
import { cli, startCluster } from '../../harness/cluster.mjs'

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

  it('merges during a resharding (slots moving between masters) lose nothing, and no call of any kind fails', async (t) => {
    const store = createRedisSessionStore({ cluster: { nodes: cluster.urls }, commandTimeout: 5000 })
    const load = mergeLoad(store)
    // Beside the merges, every other kind of call, users' indexes included,
    // on sessions of their own, with the same 5 s commandTimeout.
    const other = createRedisSessionStore({ cluster: { nodes: cluster.urls }, userIdPath: 'data.userId', commandTimeout: 5000 })
    let mixing = true
    const mixedFailures = []
    let mixed = 0
    const mixedLoops = Array.from({ length: 8 }, async (_, i) => {
      for (let n = 0; mixing; n++) {
        const id = `mixed-${i}-${n % 40}`
        mixed++
        try {
          switch (n % 7) {
            case 0: await other.set(id, { ...session(id), data: { userId: `mixer-${i}` } }, 600_000); break
            case 1: await other.get(id); break
            case 2: await other.merge(id, { 'data.n': n }, 600_000); break
            case 3: await other.lock(id, 5000); break
            case 4: await other.isLocked(id); break
            case 5: await other.unlock(id); break
            default: await other.userSessions(`mixer-${i}`)
          }
        } catch (e) {
          mixedFailures.push(`${['set', 'get', 'merge', 'lock', 'isLocked', 'unlock', 'userSessions'][n % 7]}: ${e.code}: ${e.message}`)
        }
      }
    })
    await sleep(300)
    const [a, b, c] = cluster.nodes.map((n) => n.port)
    const t0 = Date.now()
    await cluster.reshard(a, b, 2000)
    await cluster.reshard(b, c, 3000)
    await cluster.reshard(c, a, 1500)
    const reshardMs = Date.now() - t0
    await sleep(300)
    await load.stop()
    mixing = false
    await Promise.all(mixedLoops)
    await other.close()
    t.diagnostic(`${load.count()} merges during ${reshardMs} ms of resharding (6,500 slots moved), ${load.failures.length} failed`)
    // No call fails on a slot being moved. A few (userSessions, a get: 8 to
    // 16 a run here, with 64dc1fc too) get no answer within commandTimeout
    // while the cluster client's refresh of its slot map stalls: README,
    // "Redis Cluster".
    const timedOut = mixedFailures.filter((f) => f.includes('ERR_TIMEOUT'))
    t.diagnostic(`${mixed} other calls (set, get, merge, lock, isLocked, unlock, userSessions) meanwhile, ${mixedFailures.length} failed, ${timedOut.length} of them timed out`)
    assert.deepEqual(load.failures.slice(0, 5), [])
    assert.deepEqual(mixedFailures.filter((f) => !f.includes('ERR_TIMEOUT')).slice(0, 5), [])
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

  // While a slot moves, its old master answers ASK for the keys already
  // moved, and the new one serves them only right after ASKING on the same
  // connection. Many calls at once on such keys must all be served: the
  // ASKING of one may not be spent on another's command.
  it('a slot half-moved (MIGRATING, IMPORTING, its keys moved) serves every kind of call from 8 concurrent loops', async (t) => {
    const store = createRedisSessionStore({ cluster: { nodes: cluster.urls } })
    const ids8 = Array.from({ length: 8 }, (_, i) => `{moving}-${i}`)
    for (const id of ids8) await store.set(id, session(id), 600_000)
    const slot = await admin.cluster('KEYSLOT', `sess:${ids8[0]}`)
    const slots = await admin.cluster('SLOTS')
    const ownerPort = slots.find(([from, to]) => slot >= from && slot <= to)[2][1]
    const from = cluster.nodes.find((n) => n.port === ownerPort)
    const to = cluster.nodes.find((n) => n.port !== ownerPort)
    const idOf = async (node) => (await cli(['-p', String(node.port), 'cluster', 'myid'])).trim()
    const [fromId, toId] = [await idOf(from), await idOf(to)]
    await cli(['-p', String(to.port), 'cluster', 'setslot', String(slot), 'importing', fromId])
    await cli(['-p', String(from.port), 'cluster', 'setslot', String(slot), 'migrating', toId])
    // Every key but one moves; the one left is still served by the old master.
    for (const id of ids8.slice(1)) {
      await cli(['-p', String(from.port), 'migrate', '127.0.0.1', String(to.port), `sess:${id}`, '0', '5000'])
    }
    const failures = []
    let calls = 0
    const loops = ids8.map(async (id, i) => {
      for (let n = 0; n < 150; n++) {
        calls++
        try {
          switch (n % 6) {
            case 0: assert.ok(await store.get(id)); break
            case 1: await store.merge(id, { [`data.l${i}`]: n }, 600_000); break
            case 2: await store.touch(id, 600_000); break
            case 3: assert.equal(await store.lock(id, 5000), true); break
            case 4: assert.equal(await store.isLocked(id), true); break
            default: await store.unlock(id)
          }
        } catch (e) {
          failures.push(`${e.code ?? e.name}: ${e.message}`)
        }
      }
    })
    await Promise.all(loops)
    t.diagnostic(`${calls} calls on a half-moved slot, ${failures.length} failed`)
    // The move ends: the last key, then the slot.
    await cli(['-p', String(from.port), 'migrate', '127.0.0.1', String(to.port), `sess:${ids8[0]}`, '0', '5000'])
    for (const node of cluster.nodes) await cli(['-p', String(node.port), 'cluster', 'setslot', String(slot), 'node', toId])
    assert.deepEqual(failures.slice(0, 5), [])
    for (const [i, id] of ids8.entries()) assert.equal((await store.get(id)).data[`l${i}`], 145)
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
    const deadlines = { connectTimeout: 1000, commandTimeout: 1000 }
    const store = createRedisSessionStore({ cluster: { nodes: cluster.urls }, ...deadlines })
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
    // Refused, not timed out (the code says which), and within the bound.
    assertWithinBound(downMs, deadlines, 'calls to the killed master')
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
