#!/usr/bin/env node
// npm run test:cache-matrix: the read cache on every server the harness can
// get (harness/servers.mjs). For each server it records which events the
// server reports to a client that tracks a key (RESP3, CLIENT TRACKING ON
// OPTIN NOLOOP, as the store's link does), read from the wire by a raw
// socket, and then runs the read-cache suite (__test__/read-cache.test.mjs)
// against it. The table it prints is the README's ("Read cache").
// `npm run test:cache-matrix -- 8.6 valkey-9` runs the versions named.
import { spawnSync } from 'node:child_process'
import net from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { startRedis } from '../harness/redis-server.mjs'
import { cliNextTo, SERVERS, serverBinary } from '../harness/servers.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const only = process.argv.slice(2).filter((a) => !a.startsWith('--'))

/** A RESP3 connection that sends commands and collects everything it reads. */
async function connect(port) {
  const sock = net.connect({ host: '127.0.0.1', port })
  await new Promise((resolve, reject) => sock.once('connect', resolve).once('error', reject))
  const conn = {
    read: '',
    /** @param {...(string|number)} args */
    send(...args) {
      sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')}`)
    },
    /** Waits until `pattern` was read since `from`, or `ms` passed; whether it was. */
    async saw(pattern, from, ms = 300) {
      const deadline = Date.now() + ms
      while (Date.now() < deadline) {
        if (pattern.test(conn.read.slice(from))) return true
        await sleep(5)
      }
      return pattern.test(conn.read.slice(from))
    },
    close: () => sock.destroy(),
  }
  sock.on('data', (d) => (conn.read += d.toString('latin1')))
  sock.on('error', () => {})
  return conn
}

/** A report of key `k` (RESP3 push: >2 invalidate [k]), or of everything (null). */
const reportOf = (k) => new RegExp(`>2\\r\\n\\$10\\r\\ninvalidate\\r\\n\\*1\\r\\n\\$${k.length}\\r\\n${k}\\r\\n`)
const flushReport = />2\r\n\$10\r\ninvalidate\r\n(_|\*-1)\r\n/

/**
 * Which events the server at `bin` reports to a tracking client: a yes or no
 * each, as its wire shows within 300 ms.
 */
async function probe(bin) {
  const server = await startRedis({ bin, args: ['--maxmemory-policy', 'allkeys-lru', '--tracking-table-max-keys', '0'] })
  const tracker = await connect(server.port)
  const other = await connect(server.port)
  const results = {}
  try {
    tracker.send('HELLO', '3')
    tracker.send('CLIENT', 'TRACKING', 'ON', 'OPTIN', 'NOLOOP')
    /** The tracker reads `key` with CLIENT CACHING YES; the mark where to look from. */
    const track = async (key) => {
      tracker.send('CLIENT', 'CACHING', 'YES')
      tracker.send('GET', key)
      await sleep(30)
      return tracker.read.length
    }
    const event = async (name, key, act, pattern = reportOf(key)) => {
      await other.send('SET', key, 'v')
      await sleep(10)
      const from = await track(key)
      await act()
      results[name] = await tracker.saw(pattern, from)
    }
    await event('another client\'s SET', 'k1', () => other.send('SET', 'k1', 'w'))
    await event('SWAPDB', 'k2', () => other.send('SWAPDB', '0', '1'))
    other.send('SWAPDB', '0', '1')
    await event('FLUSHDB', 'k3', () => other.send('FLUSHDB'), flushReport)
    await event('FLUSHALL ASYNC', 'k4', () => other.send('FLUSHALL', 'ASYNC'), flushReport)
    await event('an active expiry', 'k5', () => other.send('PEXPIRE', 'k5', '1'))
    await event('MOVE to another db', 'k6', () => other.send('MOVE', 'k6', '1'))
    // Evictions: a small maxmemory, filled by the other client, then by the tracker.
    await event('an eviction by another client\'s write', 'k7', async () => {
      other.send('CONFIG', 'SET', 'maxmemory', '2mb')
      for (let i = 0; i < 300; i++) other.send('SET', `fill:${i}`, 'x'.repeat(20_000))
      await sleep(100)
    })
    other.send('FLUSHALL')
    other.send('CONFIG', 'SET', 'maxmemory', '0')
    await sleep(30)
    await event('an eviction by the tracker\'s own write (NOLOOP)', 'k8', async () => {
      other.send('CONFIG', 'SET', 'maxmemory', '2mb')
      await sleep(20)
      for (let i = 0; i < 300; i++) tracker.send('SET', `own:${i}`, 'x'.repeat(20_000))
      await sleep(100)
    })
    other.send('FLUSHALL')
    other.send('CONFIG', 'SET', 'maxmemory', '0')
    await sleep(30)
    // The tracking table's limit: the tracker's own reads past it.
    await event('a tracking-table drop by the tracker\'s own read (NOLOOP)', 'k9', async () => {
      other.send('CONFIG', 'SET', 'tracking-table-max-keys', '1')
      await sleep(20)
      for (let i = 0; i < 20; i++) {
        tracker.send('CLIENT', 'CACHING', 'YES')
        tracker.send('GET', `t:${i}`)
      }
      await sleep(100)
    })
    other.send('CONFIG', 'SET', 'tracking-table-max-keys', '0')
    await event('a tracking-table drop by another client\'s command', 'k10', async () => {
      for (let i = 0; i < 20; i++) {
        tracker.send('CLIENT', 'CACHING', 'YES')
        tracker.send('GET', `u:${i}`)
      }
      await sleep(20)
      other.send('CONFIG', 'SET', 'tracking-table-max-keys', '1')
      for (let i = 0; i < 20; i++) other.send('GET', 'anything')
      await sleep(100)
    })
  } finally {
    tracker.close()
    other.close()
    await server.stop()
  }
  return results
}

const rows = []
let failed = false
for (const [key, s] of Object.entries(SERVERS)) {
  if (only.length && !only.some((o) => `${key} ${s.name}`.toLowerCase().includes(o.toLowerCase()))) continue
  let bin
  try {
    bin = serverBinary(key)
  } catch (e) {
    rows.push({ name: s.name, reported: null, suite: `not available: ${/** @type {Error} */ (e).message.split('\n')[0]}` })
    continue
  }
  console.log(`\n== ${s.name} (${bin})`)
  const reported = await probe(bin)
  const r = spawnSync(process.execPath, ['--test', '__test__/read-cache.test.mjs'], {
    cwd: root,
    env: { ...process.env, REDIS_SERVER_BIN: bin, REDIS_CLI_BIN: cliNextTo(bin) },
    encoding: 'utf8',
    maxBuffer: 1 << 28,
  })
  const out = `${r.stdout}${r.stderr}`
  const num = (k) => Number(new RegExp(`^# ${k} (\\d+)`, 'm').exec(out)?.[1] ?? NaN)
  const suite = `${r.status === 0 ? 'pass' : 'FAIL'}: ${num('pass')} passed${num('fail') ? `, ${num('fail')} failed` : ''}`
  if (r.status !== 0) {
    failed = true
    console.log(out.split('\n').filter((l) => /not ok|error|expected|actual/.test(l)).slice(0, 30).join('\n'))
  }
  console.log(suite, reported)
  rows.push({ name: s.name, reported, suite })
}

const events = Object.keys(rows.find((r) => r.reported)?.reported ?? {})
console.log(`\n| event | ${rows.map((r) => r.name.replace(/ \(.*/, '')).join(' | ')} |`)
console.log(`|---|${rows.map(() => '---').join('|')}|`)
for (const e of events) console.log(`| ${e} | ${rows.map((r) => (r.reported ? (r.reported[e] ? 'reported' : '**not**') : '–')).join(' | ')} |`)
console.log(`| read-cache suite | ${rows.map((r) => r.suite).join(' | ')} |`)
process.exitCode = failed ? 1 : 0
