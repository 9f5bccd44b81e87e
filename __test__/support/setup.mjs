// Shared fixtures: one throwaway server per test file, an admin client on it,
// and stores that are closed when the file ends.
import { spawn } from 'node:child_process'
import { after, before } from 'node:test'
import { Redis } from 'ioredis'
import { createRequire } from 'node:module'
import { setTimeout as sleep } from 'node:timers/promises'
import { startRedis } from '../../harness/redis-server.mjs'
import { startCluster } from '../../harness/cluster.mjs'

/** TEST_TOPOLOGY=cluster runs a suite against a 3-master Redis Cluster. */
export const onCluster = process.env.TEST_TOPOLOGY === 'cluster'

const require = createRequire(import.meta.url)
export const { createRedisSessionStore, RedisSessionStoreError, limits } = require('../../store.js')
/** The store's own waits, in ms (src/addon/wire.rs), for bounds derived from them. */
export const { REVIVE_MAX_DELAY_MS, FRESH_FOR_MS, HEARTBEAT_MS, PROMOTION_HOLD_MS } = require('../../index.js')

/** Starts a server before the file's tests and stops it after. */
export function useRedis(opts) {
  /** @type {{server: any, admin: any, cluster?: any, stores: any[], [k: string]: any}} */
  const ctx = { server: null, admin: null, stores: [] }
  let starting = null
  /** Starts the server once; hooks of suites await it too (root hooks may not have run yet). */
  ctx.ready = () =>
    (starting ??= (async () => {
      if (onCluster && !opts) {
        ctx.cluster = await startCluster()
        ctx.server = { ...ctx.cluster.nodes[0], stop: () => ctx.cluster.stop() }
        ctx.admin = ctx.cluster.admin()
        await ctx.admin.connect()
        // SCRIPT LOAD on every master, as the store does.
        const admin = /** @type {any} */ (ctx.admin)
        admin.script = async (/** @type {string} */ sub, /** @type {string} */ src) =>
          (await Promise.all(admin.nodes('master').map((/** @type {any} */ n) => n.script(sub, src))))[0]
        return
      }
      ctx.server = await startRedis(opts)
      ctx.admin = new Redis({ port: ctx.server.port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 })
      await ctx.admin.connect()
    })())
  before(ctx.ready)
  after(async () => {
    await Promise.allSettled(ctx.stores.map((s) => s.close()))
    ctx.admin?.disconnect()
    await ctx.server?.stop()
  })
  /** A store on this file's server, closed at the end. */
  ctx.store = (options = {}) => {
    const where = ctx.cluster && !options.url ? { cluster: { nodes: ctx.cluster.urls } } : { url: ctx.server.url }
    const s = createRedisSessionStore({ ...where, ...options })
    ctx.stores.push(s)
    return s
  }
  /** Every key and its value, for "nothing was written" checks. */
  ctx.snapshot = async () => {
    const keys = ctx.cluster
      ? (await Promise.all(ctx.admin.nodes('master').map((n) => n.keys('*')))).flat().sort()
      : (await ctx.admin.keys('*')).sort()
    // Strings by value; other keys (users' indexes) by their DUMP.
    const value = async (/** @type {string} */ k) =>
      (await ctx.admin.type(k)) === 'string' ? ctx.admin.get(k) : (await ctx.admin.dumpBuffer(k))?.toString('hex')
    const values = await Promise.all(keys.map(value))
    return Object.fromEntries(keys.map((k, i) => [k, values[i]]))
  }
  return ctx
}

let counter = 0
/** A fresh 64-hex session id, as relay-session makes them. */
export const newId = () => (Date.now().toString(16) + (++counter).toString(16)).padStart(64, '0')

/** A realistic small session. */
export const session = (id, data = {}) => ({
  data: { user: { id: 7, name: 'Ada' }, cart: [], flags: { beta: true }, ...data },
  meta: { id, createdAt: 1763812345678, expiresAt: 1763812345678 + 86400000 },
})

/**
 * The call bound of a store made with `options` (README, Faults): every
 * call settles within `connectTimeout + commandTimeout` of being made. Both
 * must be given: a test that asserts a bound says which deadlines it set.
 */
export function callBound(options) {
  const { connectTimeout, commandTimeout } = options
  if (typeof connectTimeout !== 'number' || typeof commandTimeout !== 'number') {
    throw new Error('callBound: give the store connectTimeout and commandTimeout')
  }
  return connectTimeout + commandTimeout
}

/**
 * Asserts that `ms` (the time a call took, from before it was made) is
 * within the call bound of `options`, with a margin of one more bound. The
 * store's own timer ends the call at the bound; what comes after it is the
 * runtime waking and the event loop running the rejection. The margin is
 * safe because a machine that delayed that by a whole bound (at least 1 s
 * in these tests) would be stalled, not slow: node:test's own timers would
 * fail first. Anything that waited for something other than the store's
 * deadline (a queue, a reconnect, a lock) takes the bound again at least.
 */
export function assertWithinBound(ms, options, what = 'the call') {
  assertWithin(ms, callBound(options), 'the call bound (connectTimeout + commandTimeout)', what)
}

/** As assertWithinBound, for a bound of `bound` ms the store keeps (named by `name`). */
export function assertWithin(ms, bound, name, what = 'the call') {
  if (bound < 1000) throw new Error(`assertWithin: a bound under 1 s (${name}) leaves the margin too small`)
  if (!(ms <= 2 * bound)) throw new Error(`${what} took ${ms} ms: past ${name}, ${bound} ms, with a margin of one more`)
}

/**
 * Asserts that a call that rejected with ERR_TIMEOUT took at least its
 * commandTimeout: the store's timer never ends a call early. A lower bound
 * holds on any machine (slowness only adds); 1 ms is Date.now()'s rounding.
 */
export function assertNotBefore(ms, commandTimeout, what = 'the call') {
  if (!(ms >= commandTimeout - 1)) throw new Error(`${what} timed out after ${ms} ms, before its commandTimeout of ${commandTimeout} ms`)
}

/**
 * How long one Redis command may take before it holds the server "long":
 * Redis serves every app instance one command at a time, so a command that
 * took a quarter of the default commandTimeout (1 s) would put other
 * instances' calls at risk of timing out. A bound from that deadline, not
 * from this machine's speed.
 */
export const LONG_COMMAND_MS = 1000 / 4

/**
 * Waits until `cond()` holds, asking every 20 ms; fails after `ms`. A
 * deadline for an event that must come, never a measure of time: on a slow
 * machine the event comes later and the wait is longer, not the verdict.
 */
export async function until(cond, ms, what) {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`)
    await sleep(20)
  }
}

/**
 * Ms until `call` first succeeds, trying every `everyMs`; once `limitMs` have
 * passed, the last failure is thrown.
 */
export async function msUntilSuccess(call, limitMs, everyMs = 20) {
  const t0 = Date.now()
  for (;;) {
    try {
      await call()
      return Date.now() - t0
    } catch (e) {
      if (Date.now() - t0 > limitMs) throw e
      await sleep(everyMs)
    }
  }
}

/** Asserts that `promise` rejects with a RedisSessionStoreError of `code`. */
export async function rejectsWith(promise, code, messagePart) {
  let err
  try {
    await promise
  } catch (e) {
    err = e
  }
  if (!err) throw new Error(`expected a rejection with ${code}, but it resolved`)
  if (err.code !== code) throw new Error(`expected ${code}, got ${err.code}: ${err.message}`)
  if (!(err instanceof RedisSessionStoreError)) throw new Error('not a RedisSessionStoreError')
  if (messagePart && !err.message.includes(messagePart)) {
    throw new Error(`message "${err.message}" does not mention "${messagePart}"`)
  }
  return err
}

/**
 * Runs `code` in a fresh node process (extra `args` before it); resolves its
 * exit code, the signal that ended it, and its output, or fails after `ms`.
 */
export function runNode(code, ms, args = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...args, '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`the process did not exit within ${ms} ms:\n${out}`))
    }, ms)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, out })
    })
  })
}

/**
 * Gets `id` until the store's read cache says it serves (`tracking: 'on'`:
 * on a cluster, once every master's reports connection answered), or fails.
 */
export async function untilCacheServes(store, id) {
  for (let i = 0; i < 100; i++) {
    await store.get(id)
    if (store.stats().readCache.tracking === 'on') return
    await sleep(50)
  }
  throw new Error(`tracking stayed ${store.stats().readCache.tracking}`)
}
