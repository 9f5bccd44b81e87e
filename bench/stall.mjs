// `npm run bench:stall`: how long one hostile merge can hold Redis.
//
// Redis runs one command at a time for every client of every app instance, so
// the figure that matters is Redis's longest single command (SLOWLOG) and the
// longest wait another client sees (a PING loop on a connection of its own).
//
// Cases, each on a fresh redis-server:
//   script      the server-side merge script (lua/merge.lua) run directly with
//               PATHS paths spread over a SIZE_KB session: what the script
//               costs when it runs.
//   contention  the same merge through the store while two other stores keep
//               merging one path into the same session, so its compare-and-set
//               keeps failing: what the store makes Redis do under contention.
//   ordinary    8 stores each merging 1,000 paths into one 22 KB session at once.
//   gets        4, then 8 stores each merging PATHS paths into a SIZE_KB session
//               of its own at once, while another store of the process reads
//               an unrelated session in a loop, one get at a time: how long a
//               get waits while large splices run in the same process.
//   padding     3, then 6 stores each merging 1,000 paths into a session of
//               1,000 empty arrays, each path padding one with 100,000 nulls, with the same get loop beside them.
//
// STALL_PATHS (default 10000), STALL_KB (default 1024), STALL_MERGES (the
// gets case's merges at once, default 4,8) and STALL_CASES (default all five)
// change it. A script still running after 10 s is killed
// (SCRIPT KILL), as an operator would.
import { createRequire } from 'node:module'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { startRedis } from '../harness/redis-server.mjs'
import { MERGE_SOURCE as MERGE_LUA, scriptArgs } from '../harness/scripts.mjs'

const require = createRequire(import.meta.url)
const { createRedisSessionStore } = require('../store.js')

const PATHS = Number(process.env.STALL_PATHS ?? 10_000)
const KB = Number(process.env.STALL_KB ?? 1024)
const CASES = (process.env.STALL_CASES ?? 'script,contention,ordinary,gets,padding').split(',')
const MERGES = (process.env.STALL_MERGES ?? '4,8').split(',').map(Number)
const TTL = 600_000

/** A session of about `kb` KB whose data.items has one small object per ~100 bytes. */
function bigSession(id, kb) {
  const items = []
  const s = { data: { user: { name: 'Ada' }, items }, meta: { id, createdAt: 1, expiresAt: 2 } }
  const each = JSON.stringify({ sku: 'SKU-100000', qty: 1, note: 'x'.repeat(40), n: 0 }).length + 1
  for (let i = 0; i < Math.ceil((kb * 1024) / each); i++) items.push({ sku: `SKU-${100000 + i}`, qty: 1, note: 'x'.repeat(40), n: 0 })
  return s
}

/** PATHS paths spread over the session: one field of each item, cycling. */
function spreadPaths(n, items, tag) {
  const paths = {}
  for (let i = 0; i < n; i++) paths[`data.items.${i % items}.${i < items ? 'n' : `f${Math.floor(i / items)}`}`] = tag
  return paths
}

/** Watches Redis from a client of its own: the longest PING round trip. */
function watch(port) {
  // No ready check: it would wait out a busy script (INFO answers BUSY).
  const probe = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, enableReadyCheck: false })
  probe.on('error', () => {})
  let worst = 0
  let busy = 0
  let stop = false
  const loop = (async () => {
    while (!stop) {
      const t0 = performance.now()
      try {
        await probe.ping()
      } catch (e) {
        if (/BUSY/.test(String(e.message))) busy++
      }
      worst = Math.max(worst, performance.now() - t0)
      await sleep(1)
    }
  })()
  return {
    async end() {
      stop = true
      await loop
      probe.disconnect()
      return { worstPingMs: Math.round(worst), busyReplies: busy }
    },
  }
}

/** Kills a script still running after 10 s, from a connection of its own. */
function killer(port) {
  const admin = new Redis({ port, host: '127.0.0.1', enableReadyCheck: false })
  admin.on('error', () => {})
  let killed = false
  const timer = setTimeout(async () => {
    try {
      await admin.script('KILL')
      killed = true
    } catch {}
  }, 10_000)
  return {
    end() {
      clearTimeout(timer)
      admin.disconnect()
      return killed
    },
  }
}

async function slowest(admin) {
  const log = await admin.slowlog('GET', 128)
  let worst = { ms: 0, command: '' }
  for (const [, , micros, args] of log) {
    if (micros / 1000 > worst.ms) worst = { ms: Math.round(micros / 100) / 10, command: String(args[0]) }
  }
  return worst
}

async function withServer(fn) {
  const server = await startRedis({ args: ['--slowlog-log-slower-than', '1000'] })
  const admin = new Redis({ port: server.port, host: '127.0.0.1' })
  try {
    return await fn(server, admin)
  } finally {
    admin.disconnect()
    await server.stop()
  }
}

const results = []
const report = (r) => {
  results.push(r)
  console.log(JSON.stringify(r))
}

if (CASES.includes('script')) {
  await withServer(async (server, admin) => {
    const s = bigSession('s', KB)
    await admin.set('sess:s', JSON.stringify(s), 'PX', TTL)
    const paths = spreadPaths(PATHS, s.data.items.length, 7)
    const args = scriptArgs(TTL, paths) // no budget: what the script costs when it runs
    const sha = await admin.script('LOAD', MERGE_LUA)
    const w = watch(server.port)
    const k = killer(server.port)
    const t0 = performance.now()
    let outcome = 'applied'
    try {
      await admin.evalsha(sha, 1, 'sess:s', ...args)
    } catch (e) {
      outcome = String(e.message).slice(0, 80)
    }
    const ms = Math.round(performance.now() - t0)
    const killed = k.end()
    report({ case: 'script', paths: PATHS, kb: KB, ms, outcome, killed, ...(await w.end()), slowest: await slowest(admin) })
  })
}

if (CASES.includes('contention')) {
  await withServer(async (server, admin) => {
    const s = bigSession('s', KB)
    const hostile = createRedisSessionStore({ url: server.url, commandTimeout: 30_000 })
    const others = [0, 1].map(() => createRedisSessionStore({ url: server.url, commandTimeout: 30_000 }))
    await hostile.set('s', s, TTL)
    await hostile.get('s') // as relay-session does: read, then save
    const paths = spreadPaths(PATHS, s.data.items.length, 7)
    let stop = false
    let otherMerges = 0
    const loops = others.map(async (o, j) => {
      while (!stop) {
        await o.merge('s', { [`data.user.o${j}`]: otherMerges++ }, TTL).catch(() => {})
      }
    })
    await sleep(100)
    const w = watch(server.port)
    const k = killer(server.port)
    const t0 = performance.now()
    let outcome = 'applied'
    try {
      await hostile.merge('s', paths, TTL)
    } catch (e) {
      outcome = `${e.code}: ${String(e.message).slice(0, 60)}`
    }
    const ms = Math.round(performance.now() - t0)
    stop = true
    await Promise.all(loops)
    const killed = k.end()
    report({ case: 'contention', paths: PATHS, kb: KB, ms, outcome, killed, otherMerges, ...(await w.end()), slowest: await slowest(admin) })
    await Promise.all([hostile, ...others].map((x) => x.close()))
  })
}

if (CASES.includes('ordinary')) {
  await withServer(async (server, admin) => {
    const s = bigSession('s', 22)
    const stores = Array.from({ length: 8 }, () => createRedisSessionStore({ url: server.url, commandTimeout: 30_000 }))
    await stores[0].set('s', s, TTL)
    await Promise.all(stores.map((x) => x.get('s')))
    const w = watch(server.port)
    const k = killer(server.port)
    const t0 = performance.now()
    const settled = await Promise.allSettled(stores.map((x, j) => x.merge('s', spreadPaths(1000, s.data.items.length, j), TTL)))
    const ms = Math.round(performance.now() - t0)
    const killed = k.end()
    const failed = settled.filter((r) => r.status === 'rejected').map((r) => r.reason.code)
    report({ case: 'ordinary', paths: 1000, kb: 22, stores: 8, ms, failed, killed, ...(await w.end()), slowest: await slowest(admin) })
    await Promise.all(stores.map((x) => x.close()))
  })
}

/** The p-th percentile of sorted `xs`, in ms with one decimal. */
const pct = (xs, p) => Math.round(xs[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)] * 10) / 10

/**
 * `n` stores each merging `paths(j)` into a session of its own (made by
 * `make(id)`) at once, while one more store gets an unrelated small session in
 * a loop: the gets' latency while the merges run.
 */
async function getsBeside(name, n, make, paths, extra) {
  await withServer(async (server) => {
    const stores = Array.from({ length: n }, () => createRedisSessionStore({ url: server.url, commandTimeout: 30_000 }))
    const reader = createRedisSessionStore({ url: server.url })
    await reader.set('r', { data: { user: { id: 1 } }, meta: { id: 'r', createdAt: 1, expiresAt: 2 } }, TTL)
    await Promise.all(stores.map((x, j) => x.set(`m${j}`, make(`m${j}`), TTL)))
    await Promise.all(stores.map((x, j) => x.get(`m${j}`))) // as relay-session does: read, then save
    const all = stores.map((_, j) => paths(j))
    const waits = []
    /** @type {Record<string, number>} failed gets by code (a get held past its bound: ERR_TIMEOUT) */
    const getErrors = {}
    let stop = false
    const loop = (async () => {
      while (!stop) {
        const t0 = performance.now()
        await reader.get('r').catch((e) => (getErrors[e.code] = (getErrors[e.code] ?? 0) + 1))
        waits.push(performance.now() - t0)
      }
    })()
    await sleep(50)
    const t0 = performance.now()
    const settled = await Promise.allSettled(stores.map((x, j) => x.merge(`m${j}`, all[j], TTL)))
    const ms = Math.round(performance.now() - t0)
    await sleep(50)
    stop = true
    await loop
    const failed = settled.filter((r) => r.status === 'rejected').map((r) => r.reason.code)
    waits.sort((a, b) => a - b)
    report({ case: name, merges: n, ...extra, ms, failed, gets: waits.length, getP50Ms: pct(waits, 50), getP99Ms: pct(waits, 99), getMaxMs: pct(waits, 100), getErrors })
    await Promise.all([...stores, reader].map((x) => x.close()))
  })
}

if (CASES.includes('gets')) {
  for (const n of MERGES) {
    await getsBeside('gets', n, (id) => bigSession(id, KB), (j) => spreadPaths(PATHS, bigSession('x', KB).data.items.length, j), { paths: PATHS, kb: KB })
  }
}

if (CASES.includes('padding')) {
  // 1,000 empty arrays, each padded to 100,000 nulls by the merge.
  const small = (id) => ({ data: Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`pad${i}`, []])), meta: { id, createdAt: 1, expiresAt: 2 } })
  const padded = (j) => Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`data.pad${i}.99999`, j]))
  for (const n of [3, 6]) await getsBeside('padding', n, small, padded, { paths: 1000, padding: 100_000 })
}
