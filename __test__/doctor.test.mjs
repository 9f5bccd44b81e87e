// The doctor: each check against a server configured to trip it, through
// store.doctor() and the `relay-session-redis doctor` command.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { after, afterEach, before, describe, it } from 'node:test'
import { Redis } from 'ioredis'
import { createRedisSessionStore, newId, onCluster, rejectsWith, session } from './support/setup.mjs'
import { startRedis } from '../harness/redis-server.mjs'
import { startProxy } from '../harness/proxy.mjs'
import { startCluster, startSentinels } from '../harness/cluster.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const TTL = 60_000
/** A control character a terminal acts on (newlines aside). */
// oxlint-disable-next-line no-control-regex -- what the test looks for
const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/

/** The doctor's checks by name, for a store made with `options`. */
async function doctor(options) {
  const store = createRedisSessionStore(options)
  try {
    const report = await store.doctor()
    return { ok: report.ok, ...Object.fromEntries(report.checks.map((c) => [c.name, c])) }
  } finally {
    await store.close()
  }
}

/** Runs the command; its exit code and output. */
async function cli(...args) {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [path.join(root, 'cli.js'), ...args], { env: { ...process.env, REDIS_URL: '' } })
    return { code: 0, out: stdout + stderr }
  } catch (e) {
    return { code: e.code, out: e.stdout + e.stderr }
  }
}


/**
 * The latency verdict the README's Doctor gives for the round trips a
 * message reports: fail when p99 reaches half the call bound, warn when p50
 * is 2 ms or more, else ok.
 */
function latencyVerdict(message, bound) {
  const m = /round trip p50 ([\d.]+) ms, p99 ([\d.]+) ms/.exec(message)
  assert.ok(m, message)
  const [p50, p99] = [Number(m[1]), Number(m[2])]
  return p99 >= bound / 2 ? 'fail' : p50 >= 2 ? 'warn' : 'ok'
}

describe('doctor on a single server', { skip: onCluster }, () => {
  let server
  let admin
  before(async () => {
    server = await startRedis()
    admin = new Redis({ port: server.port, host: '127.0.0.1' })
  })
  after(async () => {
    admin.disconnect()
    await server.stop()
  })
  afterEach(async () => {
    await admin.config('SET', 'maxmemory', '0')
    await admin.config('SET', 'maxmemory-policy', 'noeviction')
    await admin.config('SET', 'appendonly', 'no')
    await admin.config('SET', 'save', '')
    await admin.config('SET', 'min-replicas-to-write', '0')
  })

  it('names the server and the fast paths the store takes there', async () => {
    const r = await doctor({ url: server.url })
    const info = await admin.info('server')
    const version = (/^valkey_version:(.*)$/m.exec(info) ?? /^redis_version:(.*)$/m.exec(info))[1].trim()
    assert.equal(r.server.level, 'ok')
    assert.ok(r.server.message.includes(version), r.server.message)
    assert.match(r.server.message, /SET IFDEQ|SET IFEQ|Lua scripts/)
  })

  it('passes a server with persistence, and warns of what is missing', async () => {
    await admin.config('SET', 'appendonly', 'yes')
    const r = await doctor({ url: server.url })
    assert.equal(r.ok, true)
    for (const name of ['server', 'memory', 'persistence', 'acl', 'sessions']) assert.equal(r[name].level, 'ok', `${name}: ${r[name].message}`)
    // The round trip is this machine's: the verdict must follow the README's
    // rule from the figures it gives (2,000 ms is the default call bound).
    assert.equal(r.latency.level, latencyVerdict(r.latency.message, 2000), r.latency.message)
    assert.equal(r.replication.level, 'warn')
    assert.match(r.replication.message, /no replica/)
  })

  it('fails maxmemory-policy allkeys-lru: sessions and locks are evicted', async () => {
    await admin.config('SET', 'maxmemory', '100mb')
    await admin.config('SET', 'maxmemory-policy', 'allkeys-lru')
    const r = await doctor({ url: server.url })
    assert.equal(r.ok, false)
    assert.equal(r.memory.level, 'fail')
    assert.match(r.memory.message, /allkeys-lru.*evicts any key, sessions and held locks included.*noeviction/)
    const { code, out } = await cli('doctor', server.url)
    assert.equal(code, 1)
    assert.match(out, /^✗ memory +maxmemory-policy allkeys-lru/m)
    const json = await cli('doctor', server.url, '--json')
    assert.equal(json.code, 1)
    const report = JSON.parse(json.out)
    assert.equal(report.ok, false)
    assert.equal(report.checks.find((c) => c.name === 'memory').level, 'fail')
  })

  it('warns of a volatile policy: sessions carry a TTL', async () => {
    await admin.config('SET', 'maxmemory', '100mb')
    await admin.config('SET', 'maxmemory-policy', 'volatile-lru')
    const r = await doctor({ url: server.url })
    assert.equal(r.memory.level, 'warn')
    assert.match(r.memory.message, /volatile-lru: sessions and locks carry a TTL/)
  })

  it('fails noeviction with maxmemory nearly used up: saves fail with OOM', async () => {
    const used = Number(/^used_memory:(\d+)/m.exec(await admin.info('memory'))[1])
    await admin.config('SET', 'maxmemory', String(Math.ceil(used * 1.02)))
    const r = await doctor({ url: server.url })
    assert.equal(r.memory.level, 'fail')
    assert.match(r.memory.message, /^noeviction with [\d.]+ (KiB|MiB) used of maxmemory [\d.]+ (KiB|MiB), \d+ %: saves fail with OOM/)
    const roomy = Math.ceil(used * 4)
    await admin.config('SET', 'maxmemory', String(roomy))
    assert.equal((await doctor({ url: server.url })).memory.level, 'ok')
  })

  it('warns when persistence is off, and passes RDB snapshots or AOF', async () => {
    const off = await doctor({ url: server.url })
    assert.equal(off.persistence.level, 'warn')
    assert.match(off.persistence.message, /persistence off.*every restart of Redis logs every user out/)
    await admin.config('SET', 'save', '3600 1')
    const rdb = await doctor({ url: server.url })
    assert.equal(rdb.persistence.level, 'ok')
    assert.match(rdb.persistence.message, /RDB snapshots \(save 3600 1\)/)
  })

  it('fails a replica, and min-replicas-to-write above the replicas', async () => {
    const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(server.port)] })
    try {
      const r = await doctor({ url: replica.url })
      assert.equal(r.replication.level, 'fail')
      assert.match(r.replication.message, /this node is a replica: every save fails with READONLY/)
      for (let i = 0; i < 100 && !/connected_slaves:1/.test(await admin.info('replication')); i++) await new Promise((res) => setTimeout(res, 50))
      const m = await doctor({ url: server.url })
      assert.equal(m.replication.level, 'ok')
      assert.match(m.replication.message, /master with 1 replica/)
      await admin.config('SET', 'min-replicas-to-write', '2')
      const strict = await doctor({ url: server.url })
      assert.equal(strict.replication.level, 'fail')
      assert.match(strict.replication.message, /NOREPLICAS/)
    } finally {
      await replica.stop()
    }
  })

  it('fails a user that may not run EVALSHA (asked with ACL DRYRUN)', async () => {
    await admin.call('ACL', 'SETUSER', 'noeval', 'on', '>pw', '~*', '+@all', '-evalsha')
    const r = await doctor({ url: server.url, username: 'noeval', password: 'pw' })
    assert.equal(r.acl.level, 'fail')
    // ACL DRYRUN came with Redis 7.0: before it, the doctor probes.
    const major = Number(/^redis_version:(\d+)/m.exec(await admin.info('server'))[1])
    const how = major >= 7 ? 'ACL DRYRUN' : 'harmless probes on a missing key'
    assert.match(r.acl.message, new RegExp(`may not run EVALSHA.*Grant \\+evalsha \\(checked with ${how}\\)`))
  })

  it('probes a user that may not run ACL DRYRUN, and says what INFO it may not read', async () => {
    // The README's user, without EVALSHA.
    await admin.call('ACL', 'SETUSER', 'app', 'on', '>pw', '~sess:*', '+get', '+set', '+del', '+exists', '+script|load', '+select', '+hello', '+pexpire', '+scan', '+unlink', '+ping')
    const before = await admin.dbsize()
    const r = await doctor({ url: server.url, username: 'app', password: 'pw' })
    assert.equal(r.acl.level, 'fail')
    assert.match(r.acl.message, /may not run EVALSHA.*checked with harmless probes/)
    assert.equal(r.memory.level, 'warn')
    assert.match(r.memory.message, /may not run INFO \(NOPERM\)/)
    assert.equal(await admin.dbsize(), before, 'the probes wrote nothing')
    await admin.call('ACL', 'SETUSER', 'app', '+evalsha')
    // and, as the README says, the native unlock where the server has one.
    for (const native of ['+delex', '+delifeq']) await admin.call('ACL', 'SETUSER', 'app', native).catch(() => {})
    assert.equal((await doctor({ url: server.url, username: 'app', password: 'pw' })).acl.level, 'ok')
  })

  it('warns of a slow round trip', async () => {
    const proxy = await startProxy(server.port)
    proxy.delayMs = 3
    try {
      const r = await doctor({ url: proxy.url })
      // Every round trip takes the proxy's 3 ms at least (a lower bound, on
      // any machine): warn, unless this machine takes up to half the bound.
      assert.equal(r.latency.level, latencyVerdict(r.latency.message, 2000), r.latency.message)
      assert.equal(r.latency.level, 'warn')
      assert.match(r.latency.message, /round trip p50 [\d.]+ ms, p99 [\d.]+ ms over 100 PINGs/)
    } finally {
      await proxy.stop()
    }
  })

  it('counts the sessions and samples their memory; says when the scripts are loaded', async () => {
    const store = createRedisSessionStore({ url: server.url })
    const before = await doctor({ url: server.url })
    await admin.script('FLUSH')
    assert.equal((await doctor({ url: server.url })).scripts.level, 'warn')
    for (let i = 0; i < 12; i++) {
      const id = newId()
      await store.set(id, session(id), TTL)
    }
    const id = newId()
    await store.set(id, session(id), TTL)
    await store.lock(id, TTL)
    await store.unlock(id)
    await store.merge(id, { 'data.x': 1 }, TTL)
    const r = await doctor({ url: server.url, preloadScript: true })
    assert.match(r.sessions.message, /^13 sessions under "sess:"; a session takes about [\d.]+ (B|KiB) \(MEMORY USAGE of 5\)/)
    assert.equal(r.scripts.level, 'ok')
    assert.match(before.sessions.message, /^0 sessions/)
    await store.clear()
    await store.close()
  })

  it('fails a server older than the store supports', async () => {
    // A proxy that makes the server claim major version 5 in INFO (one
    // digit for one: the reply's length stays right).
    const proxy = await startProxy(server.port)
    proxy.rewrite = (data) => Buffer.from(data.toString('latin1').replace(/(redis|valkey)_version:\d\./g, '$1_version:5.'), 'latin1')
    try {
      const r = await doctor({ url: proxy.url })
      assert.equal(r.server.level, 'fail')
      assert.match(r.server.message, /^(Redis|Valkey) 5\.[\d.]+ \(standalone\) is older than the store supports/)
    } finally {
      await proxy.stop()
    }
  })

  it('fails a server whose last snapshot failed: saves are refused', async () => {
    // A directory no file can be made in.
    const broken = await startRedis({ args: ['--dir', '/proc'] })
    const b = new Redis({ port: broken.port, host: '127.0.0.1' })
    try {
      await b.bgsave()
      for (let i = 0; i < 100 && !/rdb_last_bgsave_status:err/.test(await b.info('persistence')); i++) await new Promise((res) => setTimeout(res, 20))
      const r = await doctor({ url: broken.url })
      assert.equal(r.persistence.level, 'fail')
      assert.match(r.persistence.message, /the last RDB snapshot failed.*MISCONF/)
    } finally {
      b.disconnect()
      await broken.stop()
    }
  })

  it('fails a round trip that comes near the call bound', async () => {
    const proxy = await startProxy(server.port)
    proxy.delayMs = 50
    try {
      const r = await doctor({ url: proxy.url, connectTimeout: 40, commandTimeout: 60 })
      assert.equal(r.latency.level, 'fail')
      // PINGs go 25 at a time (a bounded number of round trips): this near
      // the bound, some of them may not be answered within it.
      assert.match(r.latency.message, /come near the call bound of 100 ms|no answer within the call bound of 100 ms/)
    } finally {
      await proxy.stop()
    }
  })

  it('warns of a user that may not run a command the store only uses where allowed', async () => {
    await admin.call('ACL', 'SETUSER', 'noscan', 'on', '>pw', '~*', '+@all', '-scan')
    const r = await doctor({ url: server.url, username: 'noscan', password: 'pw' })
    assert.equal(r.acl.level, 'warn')
    assert.match(r.acl.message, /may not run SCAN: the store does without.*Grant \+scan/)
  })

  it('fails as one line a server that refuses the connection: NOAUTH without credentials, WRONGPASS with wrong ones', async () => {
    const locked = await startRedis({ args: ['--requirepass', 'pw'] })
    try {
      for (const [options, flags, words] of [
        [{ url: locked.url }, [], /NOAUTH/],
        [{ url: locked.url, password: 'wrong' }, ['--password', 'wrong'], /WRONGPASS|authentication failed/i],
      ]) {
        await rejectsWith(doctor(options), 'ERR_AUTH')
        const { code, out } = await cli('doctor', locked.url, ...flags)
        assert.equal(code, 1, out)
        assert.equal(out.trim().split('\n').length, 1, out)
        assert.match(out, /^relay-session-redis doctor: ✗ cannot check: ERR_AUTH: /)
        assert.match(out, words)
        assert.doesNotMatch(out, /may run all/)
      }
      // With the password, every check runs.
      assert.equal((await doctor({ url: locked.url, password: 'pw' })).acl.level, 'ok')
    } finally {
      await locked.stop()
    }
  })

  it('shows what the server says with control characters escaped, never as it is', async () => {
    // The version in INFO becomes escape sequences of the same length (the
    // reply's length stays right): clear the screen, print green.
    const proxy = await startProxy(server.port)
    const hostile = '9\x1b[2J\x1b[32m\u009b\x07'
    proxy.rewrite = (data) =>
      Buffer.from(data.toString('latin1').replace(/((?:redis|valkey)_version:)([\d.]+)/g, (_, key, v) => key + hostile.padEnd(v.length, '\x07').slice(0, v.length)), 'latin1')
    try {
      const r = await doctor({ url: proxy.url })
      assert.match(r.server.message, /^(Redis|Valkey) 9\\u001b\[2J/, r.server.message)
      const { out } = await cli('doctor', proxy.url)
      assert.match(out, /\\u001b\[2J/, out)
      assert.doesNotMatch(out, CONTROL, 'no control character but newlines reaches the terminal')
      const json = await cli('doctor', proxy.url, '--json')
      assert.doesNotMatch(json.out, CONTROL)
    } finally {
      await proxy.stop()
    }
  })

  it('takes a bounded number of round trips, whatever the latency', async () => {
    // Behind a proxy that holds every reply 300 ms, each round trip is what
    // the doctor sends before the answers to the round before come back:
    // count the runs of sends between answers.
    const proxy = await startProxy(server.port)
    proxy.delayMs = 300
    proxy.flow = []
    try {
      const r = await doctor({ url: proxy.url, commandTimeout: 5000 })
      const rounds = proxy.flow.filter((what, i) => what === 'sent' && proxy.flow[i - 1] !== 'sent').length
      // As the README says: the connection's HELLO, every question at once
      // (a PING among them), then the latency check's 100 PINGs in 4 rounds
      // (the longest chain).
      assert.equal(rounds, 6, `${rounds} round trips: ${proxy.flow.join(' ')}`)
      assert.equal(r.latency.level, 'warn')
    } finally {
      await proxy.stop()
    }
  })

  it('reports a server it cannot reach, with exit code 1', async () => {
    const { code, out } = await cli('doctor', 'redis://127.0.0.1:1', '--connect-timeout', '300')
    assert.equal(code, 1)
    assert.match(out, /✗ cannot check: ERR_CONNECTION/)
    const usage = await cli('doctor', '--db', 'x')
    assert.equal(usage.code, 2)
    assert.match(usage.out, /--db must be a number/)
  })
})

describe('doctor on a cluster', { skip: !onCluster }, () => {
  it('checks that every slot is served and every master has the scripts', async () => {
    const cluster = await startCluster()
    try {
      const options = { cluster: { nodes: cluster.urls } }
      const r = await doctor(options)
      assert.equal(r.cluster.level, 'ok')
      assert.match(r.cluster.message, /3 masters serve all 16384 slots/)
      assert.equal(r.scripts.level, 'warn')
      const store = createRedisSessionStore({ ...options, preloadScript: true })
      await store.ping()
      const loaded = await doctor(options)
      await store.close()
      assert.equal(loaded.scripts.level, 'ok', loaded.scripts.message)
      assert.match(loaded.scripts.message, /on every master/)
      const { code, out } = await cli('doctor', '--cluster', cluster.urls.join(','))
      assert.match(out, /✓ cluster +3 masters/)
      assert.equal(code, 0)
      // A slot nobody serves.
      const node = new Redis({ port: cluster.nodes[0].port, host: '127.0.0.1' })
      await node.call('CLUSTER', 'DELSLOTS', '0')
      node.disconnect()
      const broken = await doctor(options)
      assert.equal(broken.cluster.level, 'fail')
      assert.match(broken.cluster.message, /not every slot is served/)
    } finally {
      await cluster.stop()
    }
  })
})

describe('doctor through Sentinel', { skip: onCluster }, () => {
  it('checks the master the sentinels name, and sees its replica', async () => {
    const set = await startSentinels()
    try {
      const r = await doctor({ sentinel: { nodes: set.urls, masterName: 'mymaster' } })
      assert.equal(r.server.level, 'ok')
      assert.equal(r.replication.level, 'ok', r.replication.message)
      assert.match(r.replication.message, /master with 1 replica/)
      const { code, out } = await cli('doctor', '--sentinel', set.urls.join(','), '--master-name', 'mymaster')
      assert.match(out, /✓ replication +master with 1 replica/)
      assert.equal(code, 0)
    } finally {
      await set.stop()
    }
  })
})
