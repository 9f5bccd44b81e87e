// @ts-nocheck
// A master, a replica and three sentinels: the master is killed under a load
// of merges, and the store carries on against the promoted replica.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { assertWithin, callBound, createRedisSessionStore, msUntilSuccess, session } from '../support/setup.mjs'
import { serverHasTls, startRedis } from '../../harness/redis-server.mjs'
import { certificates } from '../../harness/certs.mjs'
import { cli, startSentinels } from '../../harness/cluster.mjs'

/** The sentinels' own deadlines, which bound a failover. */
const SENTINELS = { downAfterMs: 1000, failoverTimeoutMs: 10_000 }

let ha
let revived = null
before(async () => {
  ha = await startSentinels(SENTINELS)
})
after(async () => {
  await revived?.stop()
  await ha?.stop()
})

const ids = Array.from({ length: 100 }, (_, i) => `ha-${i}`)

/** What `ROLE` says on `port`; '' when the connection asking was reset (a server turning into a replica may drop its clients). */
const roleOf = (port) => cli(['-p', String(port), 'role']).catch(() => '')

/**
 * Asks the sentinels to fail `oldMaster` over, until they name another
 * master; resolves when the failover that took place was asked for. A
 * sentinel refuses (NOGOODSLAVE) until it has seen the replica long enough,
 * and Redis 6.2's sentinels at times abort a promotion they started
 * (failover-abort-slave-timeout): so it asks again.
 */
async function failover(oldMaster) {
  let t0 = 0
  await msUntilSuccess(async () => {
    const reply = (await cli(['-p', String(ha.sentinels[0].port), 'sentinel', 'failover', 'mymaster'])).trim()
    if (reply !== 'OK' && !reply.includes('INPROG')) throw new Error(`SENTINEL FAILOVER: ${reply}`)
    t0 = Date.now()
    while ((await ha.masterPort()) === oldMaster) {
      if (Date.now() - t0 > 15_000) throw new Error('the failover did not complete within 15 s')
      await sleep(100)
    }
  }, 45_000, 200)
  return t0
}

describe('Redis Sentinel', () => {
  it('finds the master through the sentinels', async () => {
    const store = createRedisSessionStore({ sentinel: { nodes: ha.urls, masterName: 'mymaster' } })
    await Promise.all(ids.map((id) => store.set(id, session(id), 600_000)))
    assert.equal((await store.get(ids[0])).meta.id, ids[0])
    await store.close()
  })

  it('an unknown master name is a clear ERR_CONNECTION', async () => {
    const store = createRedisSessionStore({ sentinel: { nodes: ha.urls, masterName: 'nope' } })
    await assert.rejects(store.get('x'), { code: 'ERR_CONNECTION', message: /the sentinels name no reachable master/ })
    await store.close()
  })

  it('kill -9 of the master under merges: the store carries on against the promoted replica', async (t) => {
    const deadlines = { commandTimeout: 500, connectTimeout: 500 }
    const store = createRedisSessionStore({ sentinel: { nodes: ha.urls, masterName: 'mymaster' }, ...deadlines })
    const oldMaster = await ha.masterPort()
    let running = true
    let killedAt = 0
    const log = [] // [time, ok, id, path]
    let n = 0
    const loops = Array.from({ length: 4 }, async () => {
      while (running) {
        const i = n++
        const id = ids[i % ids.length]
        const path = `k${i}`
        try {
          await store.merge(id, { [`data.${path}`]: i }, 600_000)
          log.push([Date.now(), true, id, path])
        } catch (e) {
          log.push([Date.now(), false, id, e.code])
          if (process.env.DEBUG_HA) console.log(e.code, e.message)
          await sleep(20)
        }
      }
    })
    await sleep(1000)
    killedAt = Date.now()
    ha.master.signal('SIGKILL')
    // Run until calls have succeeded for 2 s after the first failure, at most 30 s.
    const deadline = killedAt + 30_000
    for (;;) {
      await sleep(100)
      const firstFail = log.find(([time, ok]) => !ok && time >= killedAt)
      const lastFail = log.findLast(([, ok]) => !ok)
      if (firstFail && lastFail && Date.now() - lastFail[0] > 2000) break
      if (Date.now() > deadline) break
    }
    running = false
    await Promise.all(loops)

    const newMaster = await ha.masterPort()
    const failed = log.filter(([, ok]) => !ok)
    const firstFail = failed[0]?.[0] ?? killedAt
    const lastFail = failed.at(-1)?.[0] ?? killedAt
    const codes = [...new Set(failed.map(([, , , code]) => code))]
    const before = log.filter(([time, ok]) => ok && time < killedAt)
    const afterRecovery = log.filter(([time, ok]) => ok && time > lastFail)
    // What the promoted replica has of each acknowledged merge.
    const stored = new Map()
    for (const id of ids) stored.set(id, (await store.get(id))?.data ?? {})
    const lostBefore = before.filter(([, , id, path]) => !(path in stored.get(id))).length
    const lostAfter = afterRecovery.filter(([, , id, path]) => !(path in stored.get(id))).length
    const lostDuring = log.filter(([time, ok, id, path]) => ok && time >= killedAt && time <= lastFail && !(path in stored.get(id))).length
    // Acknowledged once the old link had failed: by the promoted replica,
    // as nothing answers from a killed server after its socket's last bytes.
    const sinceFirstFail = log.filter(([time, ok]) => ok && time > firstFail)
    const lostSinceFirstFail = sinceFirstFail.filter(([, , id, path]) => !(path in stored.get(id))).length
    const report =
      `master ${oldMaster} -> ${newMaster}; calls failed from ${firstFail - killedAt} ms to ${lastFail - killedAt} ms after the kill ` +
      `(${failed.length} failed calls: ${codes.join(', ')}); acknowledged before the kill: ${before.length}, lost ${lostBefore}; ` +
      `acknowledged during the failover: lost ${lostDuring}; acknowledged after: ${afterRecovery.length}, lost ${lostAfter}`
    t.diagnostic(report)
    console.log(`failover: ${report}`)
    assert.notEqual(newMaster, oldMaster, 'no failover happened')
    assert.ok(afterRecovery.length > 100, 'the store did not carry on')
    assert.equal(lostAfter, 0)
    assert.equal(lostSinceFirstFail, 0, `${lostSinceFirstFail} of ${sinceFirstFail.length} merges acknowledged after the first failure lost`)
    // What the old master acknowledged before it died (lostBefore, and those
    // of lostDuring its socket still delivered) may be lost: Redis replicates
    // asynchronously, and the README promises nothing there. Reported only.
    // The sentinels see the master down after down-after-milliseconds and
    // finish (or give up) a failover within failover-timeout; then the
    // store's next call finds the new master within its call bound.
    assertWithin(
      lastFail - killedAt,
      SENTINELS.downAfterMs + SENTINELS.failoverTimeoutMs + callBound(deadlines),
      'down-after-milliseconds + failover-timeout + the call bound',
      'the calls that failed',
    )
    for (const c of codes) assert.ok(['ERR_CONNECTION', 'ERR_TIMEOUT', 'ERR_REDIS'].includes(c), c)
    await store.close()
  })

  it('SENTINEL FAILOVER (the old master stays up and turns replica): writes move to the new master', async (t) => {
    const store = createRedisSessionStore({ sentinel: { nodes: ha.urls, masterName: 'mymaster' }, commandTimeout: 500 })
    // A store with the read cache holds the session across the switch.
    const cached = createRedisSessionStore({ sentinel: { nodes: ha.urls, masterName: 'mymaster' }, commandTimeout: 500, readCache: true })
    // A store with users' indexes finds a user's sessions across the switch.
    const users = createRedisSessionStore({ sentinel: { nodes: ha.urls, masterName: 'mymaster' }, commandTimeout: 500, userIdPath: 'data.userId' })
    const logins = ['ha-u1', 'ha-u2', 'ha-u3']
    for (const login of logins) await users.set(login, session(login, { userId: 'ha-user' }), 600_000)
    const id = ids[0]
    await store.merge(id, { 'data.before': 1 }, 600_000)
    assert.equal((await cached.get(id)).data.before, 1)
    assert.equal((await cached.get(id)).data.before, 1)
    assert.equal(cached.stats().readCache.hits, 1)
    // The master killed above comes back; the sentinels make it a replica.
    revived = await startRedis({ port: ha.master.port })
    const t00 = Date.now()
    while (!(await cli(['-p', String(ha.master.port), 'info', 'replication'])).includes('master_link_status:up')) {
      assert.ok(Date.now() - t00 < 20_000, 'the revived server did not become a replica')
      await sleep(200)
    }
    const oldMaster = await ha.masterPort()
    const t0 = await failover(oldMaster)
    const newMaster = await ha.masterPort()
    assert.notEqual(newMaster, oldMaster)
    // Wait until the old master really is a replica, then write. (A server
    // turning into a replica may reset the connection that asks: not yet.)
    while (!(await roleOf(oldMaster)).startsWith('slave') && Date.now() - t0 < 15_000) await sleep(100)
    let ok = false
    let failures = 0
    while (!ok && Date.now() - t0 < 15_000) {
      ok = await store.merge(id, { 'data.after': 2 }, 600_000).then(() => true, () => (failures++, sleep(50).then(() => false)))
    }
    t.diagnostic(`writes on the new master ${Date.now() - t0} ms after SENTINEL FAILOVER, ${failures} failed calls`)
    assert.ok(ok)
    assert.equal(await cli(['-p', String(newMaster), 'get', `sess:${id}`]).then((v) => JSON.parse(v).data.after), 2)
    // The switch dropped what the cached store held: its next answer is the
    // new master's (a call may fail while it finds it).
    let got = null
    while (got === null && Date.now() - t0 < 20_000) got = await cached.get(id).catch(() => sleep(50).then(() => null))
    assert.equal(got?.data.after, 2)
    assert.ok(cached.stats().readCache.flushes >= 2, JSON.stringify(cached.stats().readCache))
    // The index moved with the sessions: listed, and ended, on the new master.
    let listed = null
    while (listed === null && Date.now() - t0 < 20_000) listed = await users.userSessions('ha-user').catch(() => sleep(50).then(() => null))
    assert.deepEqual(listed?.sort(), logins)
    await users.set('ha-u4', session('ha-u4', { userId: 'ha-user' }), 600_000)
    assert.equal(await users.destroyUserSessions('ha-user', { except: 'ha-u1' }), 3)
    assert.deepEqual(await users.userSessions('ha-user'), ['ha-u1'])
    await Promise.all([store.close(), cached.close(), users.close()])
  })

  it('SENTINEL FAILOVER under merges: the store moves when the sentinels announce the new master, and loses no merge it acknowledged after', async (t) => {
    const store = createRedisSessionStore({ sentinel: { nodes: ha.urls, masterName: 'mymaster' }, commandTimeout: 500 })
    const heard = await ha.announcements()
    const oldMaster = await ha.masterPort()
    // The replica demoted by the last failover copies the master first: a
    // replica promoted before it had synced would lose everything.
    await msUntilSuccess(async () => {
      const replicas = (await Promise.all([ha.master.port, ha.replica.port].map((p) => cli(['-p', String(p), 'info', 'replication']))))
        .filter((info) => info.includes('role:slave'))
      if (replicas.length !== 1 || !replicas[0].includes('master_link_status:up')) throw new Error('the replica is not in sync')
    }, 30_000, 100)
    const sessions = Array.from({ length: 50 }, (_, i) => `sw-${i}`)
    await Promise.all(sessions.map((id) => store.set(id, session(id), 600_000)))
    // Each acknowledged merge: when it started and was acknowledged, and
    // whether the store had moved to another master when it started.
    const acked = []
    const failed = []
    let running = true
    let n = 0
    const loops = Array.from({ length: 4 }, async () => {
      while (running) {
        const i = n++
        const id = sessions[i % sessions.length]
        const moved = store.stats().switches > 0
        const started = Date.now()
        try {
          await store.merge(id, { [`data.k${i}`]: i }, 600_000)
          acked.push({ started, at: Date.now(), moved, id, path: `k${i}` })
        } catch (e) {
          failed.push({ at: Date.now(), code: e.code })
          await sleep(20)
        }
      }
    })
    await sleep(500)
    const t0 = await failover(oldMaster)
    // On until the old master is a replica, and a second more.
    while (!(await roleOf(oldMaster)).startsWith('slave') && Date.now() - t0 < 20_000) await sleep(100)
    const demoted = Date.now()
    await sleep(1000)
    running = false
    await Promise.all(loops)
    await heard.stop()
    const newMaster = await ha.masterPort()
    const stored = new Map()
    for (const id of sessions) {
      const text = (await cli(['-p', String(newMaster), 'get', `sess:${id}`])).trim()
      stored.set(id, text ? JSON.parse(text).data : {})
    }
    const lost = acked.filter((a) => !(a.path in stored.get(a.id)))
    const named = heard.first('+switch-master')
    const promoted = heard.first('+promoted-slave')
    const asked = heard.first('+failover-state-send-slaveof-noone')
    const ms = (at) => (at === undefined ? '-' : `${at - t0} ms`)
    const report =
      `master ${oldMaster} -> ${newMaster}; after SENTINEL FAILOVER: replica told to stop replicating ${ms(asked)}, ` +
      `promoted ${ms(promoted)}, switch announced ${ms(named)}, old master demoted ${ms(demoted)}; ` +
      `${acked.length} merges acknowledged, ${lost.length} lost (acknowledged from ${ms(lost[0]?.at)} to ${ms(lost.at(-1)?.at)}); ` +
      `lost of those acknowledged after the switch was announced: ${lost.filter((a) => a.at > named).length} of ${acked.filter((a) => a.at > named).length}; ` +
      `${failed.length} failed calls (${[...new Set(failed.map((f) => f.code))].join(', ')}); store switches: ${store.stats().switches}`
    t.diagnostic(report)
    console.log(`sentinel switch: ${report}`)
    assert.notEqual(newMaster, oldMaster)
    assert.ok(store.stats().switches >= 1, 'the store did not hear the switch')
    // What the store started after it moved is on the new master.
    const afterMove = acked.filter((a) => a.moved)
    assert.ok(afterMove.length > 100, `${afterMove.length} merges after the store moved`)
    assert.deepEqual(afterMove.filter((a) => !(a.path in stored.get(a.id))), [])
    // A call fails only if the old master answered it after the store gave
    // it up, or if it waited for the promotion past its deadline.
    for (const f of failed) assert.ok(['ERR_CONNECTION', 'ERR_TIMEOUT'].includes(f.code), f.code)
    await store.close()
  })
})

/**
 * Starts a promotion that cannot complete, once `store` listens to every
 * sentinel: the replica is stopped, so the sentinels choose it and send it
 * REPLICAOF NO ONE, which it never carries out. Returns when the store holds
 * its calls for the promotion.
 */
async function failoverToStoppedReplica(group, store) {
  // The store listens from its first call on: each sentinel's client list
  // shows its 4 subscriptions (a sentinel has no PUBSUB NUMSUB).
  for (const s of group.sentinels) {
    await msUntilSuccess(async () => assert.match(await cli(['-p', String(s.port), 'client', 'list']), / sub=4 /), 10_000, 50)
  }
  group.replica.signal('SIGSTOP')
  assert.equal((await cli(['-p', String(group.sentinels[0].port), 'sentinel', 'failover', 'mymaster'])).trim(), 'OK')
  await msUntilSuccess(async () => assert.equal(store.status, 'reconnecting'), 10_000, 10)
}

describe('Redis Sentinel: a promotion that does not happen', () => {
  let group
  before(async () => {
    // A promotion not done within 2 s is given up (failover-timeout).
    group = await startSentinels({ failoverTimeoutMs: 2000 })
  })
  after(async () => {
    group?.replica.signal('SIGCONT')
    await group?.stop()
  })

  it('calls wait for the promotion, and go on with the master when the sentinels give it up', async (t) => {
    const store = createRedisSessionStore({ sentinel: { nodes: group.urls, masterName: 'mymaster' }, commandTimeout: 4000 })
    const id = ids[2]
    await store.set(id, session(id), 600_000)
    const heard = await group.announcements()
    await failoverToStoppedReplica(group, store)
    assert.ok(heard.first('+failover-state-send-slaveof-noone'))
    await store.merge(id, { 'data.after': 1 }, 600_000)
    const done = Date.now()
    const aborted = heard.first('-failover-abort-slave-timeout')
    t.diagnostic(`the merge waited ${done - heard.first('+failover-state-send-slaveof-noone')} ms; the promotion was given up after ${aborted - heard.first('+failover-state-send-slaveof-noone')} ms`)
    assert.ok(aborted <= done, 'the merge went on before the promotion was given up')
    assert.equal(JSON.parse(await cli(['-p', String(group.master.port), 'get', `sess:${id}`])).data.after, 1)
    assert.equal(store.stats().switches, 0)
    await heard.stop()
    await store.close()
  })
})

describe('Redis Sentinel: a promotion neither done nor given up within the hold', () => {
  let group
  before(async () => {
    // The sentinels give the promotion up only after 15 s; the store holds
    // its calls 5 s at most.
    group = await startSentinels({ failoverTimeoutMs: 15_000 })
  })
  after(async () => {
    group?.replica.signal('SIGCONT')
    await group?.stop()
  })

  it('calls go on with the master the sentinels name once the hold ends', async () => {
    // A call bound (1 s + 8 s) longer than the hold.
    const store = createRedisSessionStore({ sentinel: { nodes: group.urls, masterName: 'mymaster' }, commandTimeout: 8000 })
    const id = ids[3]
    await store.set(id, session(id), 600_000)
    const heard = await group.announcements()
    await failoverToStoppedReplica(group, store)
    await store.merge(id, { 'data.after': 1 }, 600_000)
    assert.equal(heard.first('-failover-abort-slave-timeout'), undefined, 'the merge waited for the sentinels to give up')
    assert.equal(JSON.parse(await cli(['-p', String(group.master.port), 'get', `sess:${id}`])).data.after, 1)
    assert.equal(store.stats().switches, 0)
    await heard.stop()
    await store.close()
  })
})

describe('Redis Sentinel with TLS to the data nodes', { skip: serverHasTls() ? false : 'this redis-server was built without TLS' }, () => {
  let tls
  let certs
  before(async () => {
    certs = certificates()
    certs.makeCa('ca')
    certs.makeCert('server', 'ca', 'redis-test', 'serverAuth,clientAuth')
    tls = await startSentinels({ tls: certs })
  })
  after(async () => {
    await tls?.stop()
    certs?.remove()
  })

  it('finds the master and talks TLS to it, and carries on after kill -9 of the master', async (t) => {
    const store = createRedisSessionStore({
      sentinel: { nodes: tls.urls, masterName: 'mymaster' },
      tls: { ca: certs.pem('ca.crt') },
      commandTimeout: 500,
      connectTimeout: 500,
    })
    const id = ids[0]
    await store.set(id, session(id), 600_000)
    await store.merge(id, { 'data.before': 1 }, 600_000)
    assert.equal(await tls.masterPort(), tls.master.dataPort) // the TLS port
    tls.master.signal('SIGKILL')
    const ms = await msUntilSuccess(() => store.merge(id, { 'data.after': 2 }, 600_000), 20_000, 100)
    t.diagnostic(`merges work again ${ms} ms after the kill`)
    // The store moves when the promotion is announced; the sentinel asked
    // here may learn of it a little later.
    await msUntilSuccess(async () => assert.equal(await tls.masterPort(), tls.replica.dataPort), 20_000, 100)
    assert.deepEqual((await store.get(id)).data.after, 2)
    await store.close()
    // Without the CA, the data node's certificate is not trusted.
    const untrusting = createRedisSessionStore({ sentinel: { nodes: tls.urls, masterName: 'mymaster' }, tls: {} })
    await assert.rejects(untrusting.get(id), { code: 'ERR_CONNECTION' })
    await untrusting.close()
  })
})
