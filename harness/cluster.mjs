// Throwaway Redis Cluster and Sentinel setups on loopback ports, for the HA
// tests and for running the contract suites against a cluster.
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { findRedisServer, freePort, startRedis } from './redis-server.mjs'

const run = promisify(execFile)

/** redis-cli (or valkey-cli) beside the server binary, else on PATH. */
export function redisCli() {
  if (process.env.REDIS_CLI_BIN) return process.env.REDIS_CLI_BIN
  const server = findRedisServer()
  return server.replace(/(redis|valkey)-server$/, '$1-cli')
}

/** Runs redis-cli with args; resolves its stdout. */
export async function cli(args) {
  const { stdout } = await run(redisCli(), args, { timeout: 60_000 })
  return stdout
}

async function waitFor(what, check, timeoutMs = 20_000) {
  const until = Date.now() + timeoutMs
  for (;;) {
    try {
      if (await check()) return
    } catch {}
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await sleep(100)
  }
}

/**
 * A cluster of `masters` masters, all slots assigned, state ok everywhere.
 * `bins` gives node i's server binary (a cluster in the middle of an upgrade).
 * With `replicas` (per master), the replicas follow the masters in `nodes`.
 * @param {{masters?: number, replicas?: number, args?: string[], bins?: string[]}} [opts]
 */
export async function startCluster(opts = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'rsr-cluster-'))
  const nodes = []
  const nodeArgs = (port) => [
    '--cluster-enabled', 'yes',
    '--cluster-config-file', path.join(dir, `nodes-${port}.conf`),
    '--cluster-node-timeout', '2000',
    '--dir', dir,
    ...(opts.args ?? []),
  ]
  try {
    const count = (opts.masters ?? 3) * (1 + (opts.replicas ?? 0))
    for (let i = 0; i < count; i++) {
      const port = await freePort()
      nodes.push(await startRedis({ port, args: nodeArgs(port), bin: opts.bins?.[i] }))
    }
    await cli(['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', String(opts.replicas ?? 0), '--cluster-yes'])
    for (const n of nodes) {
      await waitFor(`cluster_state:ok on ${n.port}`, async () =>
        (await cli(['-p', String(n.port), 'cluster', 'info'])).includes('cluster_state:ok'),
      )
      // A replica in sync with its master (a failover of one still in its
      // handshake never happens).
      await waitFor(`${n.port} a master or a replica in sync`, async () => {
        const [role, , , state] = (await cli(['-p', String(n.port), 'role'])).split('\n')
        return role === 'master' || state === 'connected'
      })
    }
  } catch (e) {
    await Promise.allSettled(nodes.map((n) => n.stop()))
    rmSync(dir, { recursive: true, force: true })
    throw e
  }
  const urls = nodes.map((n) => n.url)
  return {
    nodes,
    urls,
    /** An ioredis Cluster client for checks. */
    admin() {
      return new Redis.Cluster(nodes.map((n) => ({ host: '127.0.0.1', port: n.port })), { lazyConnect: true })
    },
    /** Starts node `i` again after it was stopped: same port and node id, no data. */
    async restart(i) {
      nodes[i] = await startRedis({ port: nodes[i].port, args: nodeArgs(nodes[i].port) })
      await waitFor('cluster_state:ok', async () =>
        (await cli(['-p', String(nodes[i].port), 'cluster', 'info'])).includes('cluster_state:ok'),
      )
    },
    /** Node id of the master on `port`. */
    async id(port) {
      return (await cli(['-p', String(port), 'cluster', 'myid'])).trim()
    },
    /** Moves `slots` slots from one master to another with redis-cli, keys and all. */
    async reshard(fromPort, toPort, slots) {
      await cli([
        '--cluster', 'reshard', `127.0.0.1:${fromPort}`,
        '--cluster-from', await this.id(fromPort),
        '--cluster-to', await this.id(toPort),
        '--cluster-slots', String(slots),
        '--cluster-yes',
      ])
    },
    /**
     * Promotes a replica of the master on `port` with `CLUSTER FAILOVER` (the
     * manual, lossless kind), and waits until every node sees it as master.
     * Resolves the new master's port.
     */
    async failover(port) {
      const id = await this.id(port)
      let replica
      for (const n of nodes) {
        const [role, , master] = (await cli(['-p', String(n.port), 'role'])).split('\n')
        if (role === 'slave' && master === String(port)) replica = n
      }
      if (!replica) throw new Error(`no replica of ${port} (${id})`)
      await cli(['-p', String(replica.port), 'cluster', 'failover'])
      await waitFor(`the replica on ${replica.port} promoted`, async () =>
        (await cli(['-p', String(replica.port), 'role'])).startsWith('master'),
      )
      await this.agreed()
      return replica.port
    },
    /** Waits until every node agrees on the slots and none is open (`redis-cli --cluster check`). */
    async agreed() {
      await waitFor('the nodes to agree', async () => {
        try {
          await cli(['--cluster', 'check', `127.0.0.1:${nodes[0].port}`])
          return true
        } catch {
          return false
        }
      })
    },
    async stop() {
      await Promise.allSettled(nodes.map((n) => n.stop()))
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * A master, a replica and `sentinels` sentinels watching it as `mymaster`.
 * With `tls` (a folder from certs.mjs holding ca, server.crt and server.key),
 * the data nodes also listen on a TLS port, replicate over TLS, and the
 * sentinels name them by their TLS ports; everything keeps a plain port for
 * the tests' own checks.
 * @param {{sentinels?: number, downAfterMs?: number, failoverTimeoutMs?: number, tls?: {file: (name: string) => string}}} [opts]
 */
export async function startSentinels(opts = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'rsr-sentinel-'))
  const started = []
  const tlsFiles = opts.tls
    ? ['--tls-cert-file', opts.tls.file('server.crt'), '--tls-key-file', opts.tls.file('server.key'),
       '--tls-ca-cert-file', opts.tls.file('ca.crt'), '--tls-auth-clients', 'no', '--tls-replication', 'yes']
    : []
  /** Starts a data node; resolves it with `dataPort`, the port sentinels and stores use. */
  const dataNode = async (extra = []) => {
    const tlsPort = opts.tls ? await freePort() : null
    const tlsPorts = tlsPort ? ['--tls-port', String(tlsPort), '--replica-announce-port', String(tlsPort)] : []
    const node = await startRedis({ args: ['--dir', dir, ...tlsFiles, ...tlsPorts, ...extra] })
    return Object.assign(node, { dataPort: tlsPort ?? node.port })
  }
  try {
    const master = await dataNode()
    started.push(master)
    const replica = await dataNode(['--replicaof', '127.0.0.1', String(master.dataPort)])
    started.push(replica)
    await waitFor('the replica to sync', async () =>
      (await cli(['-p', String(replica.port), 'info', 'replication'])).includes('master_link_status:up'),
    )
    const sentinels = []
    for (let i = 0; i < (opts.sentinels ?? 3); i++) {
      const port = await freePort()
      // With TLS, sentinels talk to each other over TLS too: a TLS port, announced.
      const sentinelTlsPort = opts.tls ? await freePort() : null
      const conf = path.join(dir, `sentinel-${port}.conf`)
      writeFileSync(
        conf,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `sentinel monitor mymaster 127.0.0.1 ${master.dataPort} 2`,
          ...(opts.tls
            ? [`tls-cert-file ${opts.tls.file('server.crt')}`, `tls-key-file ${opts.tls.file('server.key')}`,
               `tls-ca-cert-file ${opts.tls.file('ca.crt')}`, 'tls-replication yes',
               `tls-port ${sentinelTlsPort}`, `sentinel announce-port ${sentinelTlsPort}`]
            : []),
          `sentinel down-after-milliseconds mymaster ${opts.downAfterMs ?? 1000}`,
          `sentinel failover-timeout mymaster ${opts.failoverTimeoutMs ?? 10000}`,
          'sentinel parallel-syncs mymaster 1',
          '',
        ].join('\n'),
      )
      const s = await startRedis({ port, config: conf, args: ['--sentinel'] })
      started.push(s)
      sentinels.push(s)
    }
    await waitFor('the sentinels to see each other and the replica', async () => {
      const info = await cli(['-p', String(sentinels[0].port), 'sentinel', 'master', 'mymaster'])
      const lines = info.split('\n').map((l) => l.trim())
      const field = (name) => lines[lines.indexOf(name) + 1]
      return Number(field('num-other-sentinels')) === sentinels.length - 1 && Number(field('num-slaves')) === 1
    })
    return {
      master,
      replica,
      sentinels,
      dataNode,
      urls: sentinels.map((s) => s.url),
      /**
       * Subscribes to `channels` on every sentinel: `heard` lists what they
       * publish as it comes ({channel, message, at: Date.now()}).
       */
      async announcements(channels = ['+failover-state-send-slaveof-noone', '+promoted-slave', '+switch-master', '-failover-abort-slave-timeout']) {
        const heard = []
        const subs = sentinels.map((s) => new Redis({ host: '127.0.0.1', port: s.port, lazyConnect: true, maxRetriesPerRequest: 0 }))
        await Promise.all(subs.map(async (sub) => {
          await sub.connect()
          sub.on('message', (channel, message) => heard.push({ channel, message, at: Date.now() }))
          await sub.subscribe(...channels)
        }))
        return {
          heard,
          /** When a sentinel first published on `channel`. */
          first: (channel) => heard.find((h) => h.channel === channel)?.at,
          stop: () => Promise.allSettled(subs.map((s) => s.quit())),
        }
      },
      /** Port of the master the sentinels name now. */
      async masterPort() {
        const out = await cli(['-p', String(sentinels[0].port), 'sentinel', 'get-master-addr-by-name', 'mymaster'])
        return Number(out.trim().split('\n')[1])
      },
      async stop() {
        await Promise.allSettled(started.map((s) => s.stop()))
        rmSync(dir, { recursive: true, force: true })
      },
    }
  } catch (e) {
    await Promise.allSettled(started.map((s) => s.stop()))
    rmSync(dir, { recursive: true, force: true })
    throw e
  }
}
