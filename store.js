// @ts-check
'use strict'

// The public face of the store: checks every argument, does the JSON work in
// V8 (JSON.stringify / JSON.parse) and gives errors a stable `code`. Everything
// that talks to Redis runs in the native addon (`index.js`, generated).

const diagnosticsChannel = require('node:diagnostics_channel')
const { NativeStore, OpKind, OutcomeCode, MAX_MERGE_PATHS, MAX_PATH_SEGMENTS, MAX_TTL_MS, MAX_PADDING, MAX_SCAN_COUNT } = require('./index.js')

/** @typedef {import('./store').StoreOptions} StoreOptions */
/** @typedef {import('./store').SessionStoreData} SessionStoreData */
/** @typedef {import('./store').ErrorCode} ErrorCode */
/** @typedef {import('./store').CallContext} CallContext */

class RedisSessionStoreError extends Error {
  /**
   * @param {string} message
   * @param {ErrorCode} code
   */
  constructor(message, code) {
    super(message)
    this.name = 'RedisSessionStoreError'
    /** @type {ErrorCode} */
    this.code = code
  }
}

/** @param {string} message */
const invalid = (message) => new RedisSessionStoreError(message, 'ERR_INVALID_ARG')

// With the u flag, a surrogate pair is one code point: only lone surrogates
// match. They have no UTF-8 form, so two ids differing only in one would
// reach Redis as the same key.
const LONE_SURROGATE = /[\uD800-\uDFFF]/u

/** A path for a message: quoted, and cut when long. @param {string} path */
const quotePath = (path) => `paths['${path.length > 80 ? `${path.slice(0, 80)}…` : path}']`

// The addon's errors read "<CODE>: <message>".
const CODED = /^(ERR_[A-Z_]+): ([\s\S]*)$/

/**
 * A coded error from the addon: an Error whose message, or a string (a failed
 * op of a batch), reads "<CODE>: <message>". Called in the public method's
 * catch, so the new error's stack shows the caller.
 * @param {unknown} e
 */
function fromNative(e) {
  const text = typeof e === 'string' ? e : e instanceof Error ? e.message : null
  const m = text === null ? null : CODED.exec(text)
  if (!m) return e
  return new RedisSessionStoreError(m[2], /** @type {ErrorCode} */ (m[1]))
}

const OPTION_TYPES = {
  url: 'string',
  cluster: 'object',
  sentinel: 'object',
  username: 'string',
  password: 'string',
  db: 'number',
  tls: 'object',
  prefix: 'string',
  lockPrefix: 'string',
  preloadScript: 'boolean',
  connectTimeout: 'number',
  commandTimeout: 'number',
  rememberedTextBytes: 'number',
}

/** @param {unknown} v */
const isPlainObject = (v) => {
  if (typeof v !== 'object' || v === null) return false
  const proto = Object.getPrototypeOf(v)
  return proto === Object.prototype || proto === null
}

/**
 * Checks an object's keys against `types`; returns a copy without undefined values.
 * @param {unknown} value
 * @param {string} where
 * @param {Record<string, string>} types
 * @returns {Record<string, any>}
 */
function checkObject(value, where, types) {
  if (!isPlainObject(value)) throw invalid(`${where} must be a plain object, got ${describe(value)}`)
  const o = /** @type {Record<string, unknown>} */ (value)
  /** @type {Record<string, any>} */
  const out = {}
  for (const key of Object.keys(o)) {
    const type = types[key]
    if (!type) throw invalid(`unknown option '${key}' in ${where}; known: ${Object.keys(types).join(', ')}`)
    const v = o[key]
    if (v === undefined) continue
    if (type === 'pem') {
      if (typeof v === 'string') out[key] = v
      else if (Buffer.isBuffer(v)) out[key] = v.toString('utf8')
      else throw invalid(`${where}.${key} must be PEM text as a string or Buffer, got ${describe(v)}`)
    } else if (type === 'urls') {
      if (!Array.isArray(v) || v.length === 0 || !v.every((u) => typeof u === 'string')) {
        throw invalid(`${where}.${key} must be a non-empty array of URL strings`)
      }
      out[key] = [...v]
    } else if (type === 'object' ? !isPlainObject(v) : typeof v !== type) {
      throw invalid(`${where}.${key} must be ${type === 'object' ? 'a plain object' : `a ${type}`}, got ${describe(v)}`)
    } else if (typeof v === 'string' && LONE_SURROGATE.test(v)) {
      throw invalid(`${where}.${key} must be a well-formed string: it holds a lone surrogate (\\ud800-\\udfff)`)
    } else {
      out[key] = v
    }
  }
  return out
}

/**
 * @param {unknown} options
 * @param {string} where
 * @returns {StoreOptions}
 */
function checkOptions(options, where) {
  if (options === undefined) return {}
  const o = checkObject(options, where, OPTION_TYPES)
  if (o.tls) o.tls = checkObject(o.tls, `${where}.tls`, { ca: 'pem', cert: 'pem', key: 'pem' })
  if (o.cluster) o.cluster = checkObject(o.cluster, `${where}.cluster`, { nodes: 'urls' })
  if (o.cluster && !o.cluster.nodes) throw invalid(`${where}.cluster.nodes must be a non-empty array of URL strings`)
  if (o.sentinel) {
    o.sentinel = checkObject(o.sentinel, `${where}.sentinel`, {
      nodes: 'urls',
      masterName: 'string',
      username: 'string',
      password: 'string',
    })
    if (!o.sentinel.nodes) throw invalid(`${where}.sentinel.nodes must be a non-empty array of URL strings`)
    if (!o.sentinel.masterName) throw invalid(`${where}.sentinel.masterName must be a non-empty string`)
  }
  return /** @type {StoreOptions} */ (o)
}

/** @param {unknown} v */
function describe(v) {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  if (typeof v === 'object' && !isPlainObject(v)) {
    const name = /** @type {any} */ (v).constructor?.name
    return typeof name === 'string' && name !== 'Object' ? `an instance of ${name}` : 'an object with a custom prototype'
  }
  return typeof v
}

/**
 * Whether `v` looks like an ioredis client (the migration form).
 * @param {unknown} v
 * @returns {v is {options: Record<string, any>, isCluster?: boolean}}
 */
function isIoredis(v) {
  const r = /** @type {any} */ (v)
  return typeof r === 'object' && r !== null && typeof r.sendCommand === 'function' && isObject(r.options ?? r.redisOptions)
}

/** @param {unknown} v */
const isObject = (v) => typeof v === 'object' && v !== null

/**
 * Options for a connection of our own to the server an ioredis client is set
 * up for: host, port, username, password, db and tls. ioredis's `keyPrefix`
 * also prefixes the JS adapter's keys, so it goes in front of `prefix`.
 * @param {{options: Record<string, any>, isCluster?: boolean}} redis
 * @param {StoreOptions} options
 * @returns {StoreOptions}
 */
function optionsFromIoredis(redis, options) {
  if (redis.isCluster) throw invalid('an ioredis Cluster is not supported here: pass options.cluster with its node URLs')
  if (options.url !== undefined || options.cluster !== undefined || options.sentinel !== undefined) {
    throw invalid('options.url, options.cluster and options.sentinel cannot be given with an ioredis instance')
  }
  const o = redis.options
  if (o.path) throw invalid('the ioredis instance connects through a unix socket (options.path), which the store does not support')
  /** @type {StoreOptions} */
  const out = { ...options, prefix: String(o.keyPrefix ?? '') + (options.prefix ?? 'sess:') }
  let scheme = 'redis'
  if (o.tls) {
    /** @type {Record<string, any>} */
    const tls = {}
    for (const k of Object.keys(o.tls)) {
      if (o.tls[k] === undefined) continue
      if (k !== 'ca' && k !== 'cert' && k !== 'key') {
        throw invalid(`the ioredis instance sets tls.${k}: only tls.ca, tls.cert and tls.key are supported`)
      }
      tls[k] = Array.isArray(o.tls[k]) ? o.tls[k].map(String).join('\n') : o.tls[k]
    }
    if (Object.keys(tls).length > 0) out.tls = /** @type {any} */ (checkOptions({ tls }, 'the ioredis instance\'s').tls)
    scheme = 'rediss'
  }
  if (o.username) out.username = String(o.username)
  if (o.password) out.password = String(o.password)
  if (o.sentinels) {
    if (o.tls) throw invalid('the ioredis instance uses Sentinel with TLS, which the store does not support')
    out.sentinel = {
      nodes: o.sentinels.map((/** @type {any} */ n) => `redis://${hostPort(n.host, n.port ?? 26379)}`),
      masterName: String(o.name ?? ''),
      ...(o.sentinelUsername ? { username: String(o.sentinelUsername) } : {}),
      ...(o.sentinelPassword ? { password: String(o.sentinelPassword) } : {}),
    }
    out.db = Number(o.db ?? 0)
    return out
  }
  out.url = `${scheme}://${hostPort(o.host ?? 'localhost', o.port ?? 6379)}/${Number(o.db ?? 0)}`
  return out
}

/** host:port for a URL, IPv6 hosts in brackets. */
const hostPort = (/** @type {unknown} */ host, /** @type {unknown} */ port) => {
  const h = String(host)
  return `${h.includes(':') ? `[${h}]` : h}:${Number(port)}`
}

/** @param {unknown} id */
function checkId(id) {
  if (typeof id !== 'string' || id.length === 0) {
    throw invalid(`sessionId must be a non-empty string, got ${typeof id === 'string' ? 'an empty string' : describe(id)}`)
  }
  if (LONE_SURROGATE.test(id)) {
    throw invalid('sessionId must be a well-formed string: it holds a lone surrogate (\\ud800-\\udfff)')
  }
}

/**
 * @param {unknown} ttl
 * @returns {number} whole ms
 */
function checkTtl(ttl) {
  if (typeof ttl !== 'number' || !(ttl > 0 && ttl <= MAX_TTL_MS)) {
    throw invalid(`ttlMs must be a number of ms greater than 0 and at most ${MAX_TTL_MS}, got ${typeof ttl === 'number' ? ttl : describe(ttl)}`)
  }
  return Math.ceil(ttl)
}

/**
 * The (path, value JSON) pairs of a merge, checked: '' stands for a removal.
 * Reading `paths` runs the caller's code (getters, proxies): what it throws
 * becomes ERR_INVALID_ARG.
 * @param {unknown} paths
 * @returns {string[]}
 */
function mergePairs(paths) {
  if (!isPlainObject(paths)) throw invalid(`paths must be a plain object, got ${describe(paths)}`)
  const o = /** @type {Record<string, unknown>} */ (paths)
  let keys
  try {
    if (Object.getOwnPropertySymbols(o).length > 0) throw invalid('paths must have string keys only, not symbols')
    keys = Object.keys(o)
  } catch (e) {
    if (e instanceof RedisSessionStoreError) throw e
    throw invalid(`paths could not be read: ${/** @type {Error} */ (e)?.message ?? String(e)}`)
  }
  if (keys.length > MAX_MERGE_PATHS) {
    throw invalid(`paths has ${keys.length} paths; one merge takes at most ${MAX_MERGE_PATHS} (MAX_MERGE_PATHS)`)
  }
  /** @type {string[]} */
  // oxlint-disable-next-line unicorn/no-new-array -- sized once, filled by index below
  const pairs = new Array(keys.length * 2)
  for (let i = 0; i < keys.length; i++) {
    const path = keys[i]
    if (path.length === 0) throw invalid('paths must not have an empty key')
    if (LONE_SURROGATE.test(path)) throw invalid(`${quotePath(path)} must be a well-formed string: it holds a lone surrogate`)
    let segments = 1
    for (let at = path.indexOf('.'); at !== -1; at = path.indexOf('.', at + 1)) {
      if (++segments > MAX_PATH_SEGMENTS) {
        throw invalid(`${quotePath(path)} has more than ${MAX_PATH_SEGMENTS} segments (MAX_PATH_SEGMENTS)`)
      }
    }
    let value
    try {
      value = o[path]
    } catch (e) {
      throw invalid(`${quotePath(path)} could not be read: ${/** @type {Error} */ (e)?.message ?? String(e)}`)
    }
    // '' is no JSON text: the store reads it as "remove".
    pairs[2 * i] = path
    pairs[2 * i + 1] = value === undefined ? '' : (stringify(value, quotePath(path)) ?? '')
  }
  return pairs
}

/**
 * JSON text of a value, or undefined where JSON has no text for it.
 * @param {unknown} value
 * @param {string} name
 */
function stringify(value, name) {
  try {
    return JSON.stringify(value)
  } catch (e) {
    throw invalid(`${name} cannot be written as JSON: ${/** @type {Error} */ (e).message}`)
  }
}

/**
 * The session a stored text holds. Its messages quote neither the session id
 * (the bearer token of a user's cookie) nor the text (V8's messages may quote
 * a piece of it): only where the text stops being JSON.
 * @param {string} text
 * @returns {SessionStoreData}
 */
function parseSession(text) {
  let value
  try {
    value = JSON.parse(text)
  } catch (e) {
    const at = /position (\d+)/.exec(String(/** @type {Error} */ (e)?.message))
    throw new RedisSessionStoreError(
      `the stored session is not valid JSON${at ? ` (at character ${Number(at[1]) + 1})` : ''}`,
      'ERR_CORRUPT_SESSION',
    )
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new RedisSessionStoreError('the stored session is not a JSON object', 'ERR_CORRUPT_SESSION')
  }
  return value
}

// Op and outcome codes, from src/ops.rs.
const { Get: GET, Set: SET, Delete: DELETE, Merge: MERGE, Lock: LOCK, Unlock: UNLOCK, IsLocked: IS_LOCKED, Touch: TOUCH } = OpKind
const { True: TRUE, False: FALSE, Text: TEXT, Null: NULL, Failed: FAILED } = OutcomeCode

// Every call, as a TracingChannel (start, end, asyncStart, asyncEnd, error)
// whose context carries the op, the key prefix, the server and the batch
// size, never the session id (the bearer token of a user's cookie), data or
// credentials. Node 18.19+ and 19.9+ have TracingChannel; with nobody
// subscribed a call pays one `hasSubscribers` check.
/** @type {import('node:diagnostics_channel').TracingChannel<any, CallContext> | null} */
const calls = typeof diagnosticsChannel.tracingChannel === 'function' ? diagnosticsChannel.tracingChannel('relay-session-redis:call') : null
/** Whether anyone subscribed to `calls` (`hasSubscribers` is Node 20.13+ / 22+). */
const traced =
  calls === null
    ? () => false
    : typeof calls.hasSubscribers === 'boolean'
      ? () => /** @type {any} */ (calls).hasSubscribers
      : () =>
          // @ts-ignore: the channels' own flags, before Node had the aggregate
          calls.start.hasSubscribers || calls.end.hasSubscribers || calls.asyncStart.hasSubscribers || calls.asyncEnd.hasSubscribers || calls.error.hasSubscribers

/** What ops without a ttl pass for it. */
const NO_TTL = Symbol('no ttl')

/**
 * `host:port` split for tracing (an IPv6 host has colons of its own).
 * @param {string} address
 */
function splitAddress(address) {
  const at = address.lastIndexOf(':')
  return at < 0 ? { serverAddress: address, serverPort: undefined } : { serverAddress: address.slice(0, at), serverPort: Number(address.slice(at + 1)) }
}

// The batches in flight in this thread, by number: their resolvers, how many
// of their ops have not settled, and what to tell their store when all have.
// Outcomes come from Rust through one channel per store, all into
// `onOutcomes`, which holds no store: a store nobody uses can be collected.
/** @type {Map<number, {settle: Function[], left: number, done: () => void}>} */
const inFlight = new Map()
let lastBatch = 0
// The channel from Rust does not keep the process alive; this timer does,
// ref'd only while calls are in flight, so a process exits once they settle.
const keepAlive = setInterval(() => {}, 2 ** 30)
keepAlive.unref()

// Node delivers crossings that arrive while the main thread is still busy
// with earlier ones in the same event-loop turn, up to 1000 in a row. When
// callers answer each outcome with another call (a script, a queue worker),
// outcomes keep arriving and timers and I/O wait: 256 sets of 32 KB kept in
// flight held the loop for 25 s. So a turn settles outcomes for at most
// TURN_BUDGET_MS; later ones are settled in the turn's check phase.
const TURN_BUDGET_MS = 5
/** When this turn's first crossing arrived; -1 between turns. */
let turnStart = -1
/** @type {Parameters<typeof settleOutcomes>[]} */
let deferred = []

function endTurn() {
  turnStart = -1
  const later = deferred
  deferred = []
  for (const outcomes of later) settleOutcomes(...outcomes)
}

/**
 * Outcomes as they settle, per op: its batch, its place in the batch, its
 * OutcomeCode, its text or error "<CODE>: <message>".
 * @param {number[]} batches @param {number[]} slots @param {number[]} codes @param {(string | null)[]} values
 */
function onOutcomes(batches, slots, codes, values) {
  if (turnStart < 0) {
    turnStart = performance.now()
    setImmediate(endTurn)
  } else if (deferred.length > 0 || performance.now() - turnStart > TURN_BUDGET_MS) {
    deferred.push([batches, slots, codes, values])
    return
  }
  settleOutcomes(batches, slots, codes, values)
}

/** @param {number[]} batches @param {number[]} slots @param {number[]} codes @param {(string | null)[]} values */
function settleOutcomes(batches, slots, codes, values) {
  for (let i = 0; i < batches.length; i++) {
    const b = inFlight.get(batches[i])
    if (b === undefined) continue
    const slot = slots[i]
    const code = codes[i]
    if (code === FAILED) b.settle[2 * slot + 1](values[i])
    else b.settle[2 * slot](code === TEXT ? values[i] : code === NULL ? null : code === TRUE ? true : code === FALSE ? false : undefined)
    if (--b.left === 0) {
      inFlight.delete(batches[i])
      b.done()
    }
  }
  if (inFlight.size === 0) keepAlive.unref()
}

// Calls made in one tick cross into Rust together, as one batch (one Redis
// pipeline, one completion); see #flush for when a batch leaves. A cap lets
// several batches overlap under load, so the event loop keeps working while
// a batch is out. Each batch is one read and one write for Redis: at 64
// calls in flight, 16 per batch cost Redis 1.2-1.45x the CPU per lock+unlock
// of ioredis's one pipeline per tick, 32 per batch 1.1-1.25x (and gets of
// 32 KB ran 15-25 % faster).
const MAX_BATCH = 32
/** The cap of a batch gathering calls made alone until the check phase. */
const MAX_GATHERED = 64
/** Calls made in one tick that cross at once even while a batch is out. */
const BURST = 4

class Batch {
  /** @type {number[]} */ kinds = []
  /** @type {string[]} */ ids = []
  /** @type {number[]} */ ttls = []
  /** @type {number[]} */ counts = []
  /** @type {string[]} */ strings = []
  /** resolve, reject, resolve, reject, … one pair per op @type {Function[]} */ settle = []
  /** Whether it gathers calls made alone until the turn's check phase. */
  gathering = false
  /** When its first call was made: a call's bound counts from the call, not from the crossing. */
  since = performance.now()
  /** The tracing contexts of its calls, when someone subscribed. @type {CallContext[] | null} */
  traces = null
}

class RedisSessionStore {
  /** @type {NativeStore} */
  #native
  /** @type {Batch | null} */
  #batch = null
  /** How many batches this store has opened; the last one's number. */
  #opened = 0
  /** Batches of this store in flight, and who waits for none (close()). */
  #batches = 0
  /** @type {(() => void)[]} */
  #idle = []
  /** Set by close(): later calls reject with ERR_CLOSED. */
  #closed = false
  /** The tracing context of the call being made, until it is queued. @type {CallContext | null} */
  #tracing = null
  /** The key prefix, for tracing. */
  #prefix = ''
  #batchDone = () => {
    if (--this.#batches === 0) for (const resolve of this.#idle.splice(0)) resolve()
  }

  /** @param {StoreOptions} options */
  constructor(options) {
    try {
      // checkOptions made the TLS PEM text strings, as the native half takes them.
      this.#native = new NativeStore(/** @type {import('./index').StoreOptions} */ (options), onOutcomes)
    } catch (e) {
      throw fromNative(e)
    }
    this.#prefix = this.#native.prefix
    if (options.preloadScript) {
      // A failed preload is retried by the first merge (NOSCRIPT loads the
      // scripts), so its failure is not reported here.
      this.#native.preload().catch(() => {})
    }
  }

  /**
   * Queues one op; its strings are pushed by the caller right after.
   * @returns {[Batch, Promise<any>]}
   */
  #enqueue(/** @type {number} */ kind, /** @type {string} */ id, /** @type {number} */ ttl, /** @type {number} */ count) {
    let b = this.#batch
    if (b === null) {
      b = this.#batch = new Batch()
      // The flush knows its batch by number, not by reference: a batch sent
      // full before its flush runs must not be kept alive (its strings are
      // the sessions' JSON) by a flush still waiting in the queue.
      const number = ++this.#opened
      queueMicrotask(() => this.#flush(number, false))
    }
    if (this.#tracing !== null) {
      ;(b.traces ??= []).push(this.#tracing)
      this.#tracing = null
    }
    b.kinds.push(kind)
    b.ids.push(id)
    b.ttls.push(ttl)
    b.counts.push(count)
    const settle = b.settle
    const promise = new Promise((resolve, reject) => settle.push(resolve, reject))
    return [b, promise]
  }

  /**
   * The value a queued op settled with; a failure becomes a coded error here,
   * in a frame the public method awaits, so its stack shows the caller.
   * @param {Promise<any>} p
   */
  async #outcome(p) {
    try {
      return await p
    } catch (e) {
      throw fromNative(e)
    }
  }

  /**
   * Sends batch `number` if it is still the open one. Idle, a batch goes at
   * the end of its tick: nothing waits. So does a burst (BURST calls or more
   * in one tick: a loop, a Promise.all, the callers of a batch that just
   * settled), which keeps batches overlapping. But with a batch of this store
   * out, fewer calls made alone (a request's read of its session) wait for
   * the event-loop turn's check phase, and the calls of the rest of the turn
   * (other sockets' reads, other completions) join it: concurrent requests
   * share one crossing and one pipeline.
   */
  #flush(/** @type {number} */ number, /** @type {boolean} */ atCheckPhase) {
    const b = this.#batch
    if (b === null || this.#opened !== number) return
    if (atCheckPhase || this.#batches === 0 || b.kinds.length >= BURST) this.#send()
    else {
      b.gathering = true
      setImmediate(() => this.#flush(number, true))
    }
  }

  #sendIfFull(/** @type {Batch} */ b) {
    if (b.kinds.length >= (b.gathering ? MAX_GATHERED : MAX_BATCH)) this.#send()
  }

  #send() {
    const b = /** @type {Batch} */ (this.#batch)
    this.#batch = null
    if (b.traces !== null) for (const t of b.traces) t.batchSize = b.kinds.length
    const id = (lastBatch = (lastBatch + 1) >>> 0)
    if (inFlight.size === 0) keepAlive.ref()
    inFlight.set(id, { settle: b.settle, left: b.kinds.length, done: this.#batchDone })
    this.#batches++
    try {
      this.#native.batch(id, b.kinds, b.ids, b.ttls, b.counts, b.strings, performance.now() - b.since)
    } catch (e) {
      // Refused before anything was sent: every op of the batch fails with it.
      inFlight.delete(id)
      if (inFlight.size === 0) keepAlive.unref()
      for (let i = 1; i < b.settle.length; i += 2) b.settle[i](e)
      this.#batchDone()
    }
  }

  #checkOpen() {
    if (this.#closed) throw new RedisSessionStoreError('the store is closed', 'ERR_CLOSED')
  }

  /**
   * Runs `call` as op `op` of the tracing channel, as TracingChannel's
   * tracePromise does (its stores bound in start, so an APM's context
   * follows the call) but without putting the call's value in the context:
   * a get's value is session data. The call's queued op takes the context
   * (for its batch size), and a failure's code joins it.
   * @template T
   * @param {string} op
   * @param {() => Promise<T>} call
   * @returns {Promise<T>}
   */
  #traced(op, call) {
    const { start, end, asyncStart, asyncEnd, error } = /** @type {NonNullable<typeof calls>} */ (calls)
    /** @type {CallContext} */
    const context = { op: /** @type {any} */ (op), prefix: this.#prefix, ...splitAddress(this.#native.address), batchSize: 0 }
    return start.runStores(context, () => {
      // A getter of a merge's paths may call the store: keep the outer context.
      const outer = this.#tracing
      this.#tracing = context
      try {
        return call().then(
          (value) => {
            asyncStart.publish(context)
            asyncEnd.publish(context)
            return value
          },
          (e) => {
            context.error = e
            context.errorCode = e?.code
            error.publish(context)
            asyncStart.publish(context)
            asyncEnd.publish(context)
            throw e
          },
        )
      } finally {
        this.#tracing = outer
        end.publish(context)
      }
    })
  }

  /**
   * @param {string} sessionId
   * @returns {Promise<SessionStoreData | null>}
   */
  get(sessionId) {
    return traced() ? this.#traced('get', () => this.#get(sessionId)) : this.#get(sessionId)
  }

  /** @param {string} sessionId */
  async #get(sessionId) {
    this.#checkOpen()
    checkId(sessionId)
    const [b, p] = this.#enqueue(GET, sessionId, 0, 0)
    this.#sendIfFull(b)
    const text = await this.#outcome(p)
    return text === null ? null : parseSession(text)
  }

  /**
   * @param {string} sessionId
   * @param {SessionStoreData} data
   * @param {number} ttlMs
   * @returns {Promise<void>}
   */
  set(sessionId, data, ttlMs) {
    return traced() ? this.#traced('set', () => this.#set(sessionId, data, ttlMs)) : this.#set(sessionId, data, ttlMs)
  }

  /** @param {string} sessionId @param {SessionStoreData} data @param {number} ttlMs */
  async #set(sessionId, data, ttlMs) {
    this.#checkOpen()
    checkId(sessionId)
    if (typeof data !== 'object' || data === null || Array.isArray(data)) {
      throw invalid(`data must be an object, got ${describe(data)}`)
    }
    const ttl = checkTtl(ttlMs)
    const json = stringify(data, 'data')
    if (typeof json !== 'string' || json[0] !== '{') throw invalid('data must serialise to a JSON object')
    const [b, p] = this.#enqueue(SET, sessionId, ttl, 1)
    b.strings.push(json)
    this.#sendIfFull(b)
    await this.#outcome(p)
  }

  /**
   * Removes the session and its lock.
   * @param {string} sessionId
   * @returns {Promise<void>}
   */
  delete(sessionId) {
    return this.#simple('delete', DELETE, sessionId, NO_TTL)
  }

  /**
   * Applies dirty dot-paths atomically; `undefined` removes a path. Does nothing
   * when the session does not exist.
   * @param {string} sessionId
   * @param {Record<string, unknown>} paths
   * @param {number} ttlMs
   * @returns {Promise<void>}
   */
  merge(sessionId, paths, ttlMs) {
    return traced() ? this.#traced('merge', () => this.#merge(sessionId, paths, ttlMs)) : this.#merge(sessionId, paths, ttlMs)
  }

  /** @param {string} sessionId @param {Record<string, unknown>} paths @param {number} ttlMs */
  async #merge(sessionId, paths, ttlMs) {
    this.#checkOpen()
    checkId(sessionId)
    const pairs = mergePairs(paths)
    const ttl = checkTtl(ttlMs)
    const [b, p] = this.#enqueue(MERGE, sessionId, ttl, pairs.length)
    for (let i = 0; i < pairs.length; i++) b.strings.push(pairs[i])
    this.#sendIfFull(b)
    await this.#outcome(p)
  }

  /**
   * Takes the session's lock atomically; `true` when this call got it.
   * @param {string} sessionId
   * @param {number} ttlMs
   * @returns {Promise<boolean>}
   */
  lock(sessionId, ttlMs) {
    return this.#simple('lock', LOCK, sessionId, ttlMs)
  }

  /**
   * Releases the lock if this store still holds it.
   * @param {string} sessionId
   * @returns {Promise<void>}
   */
  unlock(sessionId) {
    return this.#simple('unlock', UNLOCK, sessionId, NO_TTL)
  }

  /**
   * @param {string} sessionId
   * @returns {Promise<boolean>}
   */
  isLocked(sessionId) {
    return this.#simple('isLocked', IS_LOCKED, sessionId, NO_TTL)
  }

  /**
   * Sets an existing session's time to live (`PEXPIRE`); creates nothing.
   * `true` when the session existed.
   * @param {string} sessionId
   * @param {number} ttlMs
   * @returns {Promise<boolean>}
   */
  touch(sessionId, ttlMs) {
    return this.#simple('touch', TOUCH, sessionId, ttlMs)
  }

  /**
   * An op that takes only the id, and a ttl unless `ttlMs` is NO_TTL.
   * @param {string} op @param {number} kind @param {unknown} sessionId @param {unknown} ttlMs
   */
  #simple(op, kind, sessionId, ttlMs) {
    return traced() ? this.#traced(op, () => this.#queueSimple(kind, sessionId, ttlMs)) : this.#queueSimple(kind, sessionId, ttlMs)
  }

  /** @param {number} kind @param {unknown} sessionId @param {unknown} ttlMs */
  async #queueSimple(kind, sessionId, ttlMs) {
    this.#checkOpen()
    checkId(sessionId)
    const ttl = ttlMs === NO_TTL ? 0 : checkTtl(ttlMs)
    const [b, p] = this.#enqueue(kind, /** @type {string} */ (sessionId), ttl, 0)
    this.#sendIfFull(b)
    return await this.#outcome(p)
  }

  /**
   * Counts since the store was created (see the README's "Stats").
   * @returns {import('./store').StoreStats}
   */
  stats() {
    return this.#native.stats()
  }

  /**
   * 'connecting' until the first call or ping() opens the connection, then
   * 'ready', 'reconnecting' while it is lost, 'closed' after close().
   * @returns {import('./store').StoreStatus}
   */
  get status() {
    return this.#native.status
  }

  /**
   * One PING (on a cluster, to every master), bounded like every call;
   * resolves with the round trip in ms.
   * @returns {Promise<number>}
   */
  ping() {
    return traced() ? this.#traced('ping', () => this.#admin(() => this.#native.ping())) : this.#admin(() => this.#native.ping())
  }

  /**
   * A native admin call, with the store's checks and error codes.
   * @template T
   * @param {() => Promise<T>} call
   * @returns {Promise<T>}
   */
  async #admin(call) {
    this.#checkOpen()
    try {
      return await call()
    } catch (e) {
      throw fromNative(e)
    }
  }

  /**
   * The session ids under the prefix, a SCAN page at a time on every master
   * (lock keys left out). An id may come twice while keys are being written
   * (SCAN's own guarantee): one that exists throughout comes at least once.
   * @param {{count?: number}} [options] keys per SCAN page (default 1000)
   * @returns {AsyncGenerator<string, void, undefined>}
   */
  async *ids(options) {
    const count = scanCount(options, 'ids')
    for (const node of await this.#admin(() => this.#native.masters())) {
      let cursor = '0'
      do {
        const page = await this.#admin(() => this.#native.scan(node, cursor, count, true))
        yield* page.ids
        cursor = page.cursor
      } while (cursor !== '0')
    }
  }

  /**
   * How many sessions are under the prefix, counted with SCAN on every
   * master (lock keys left out): exact while no sessions come or go.
   * @returns {Promise<number>}
   */
  length() {
    return traced() ? this.#traced('length', () => this.#walk(false)) : this.#walk(false)
  }

  /**
   * Removes every session and lock under the prefix, a SCAN page and one
   * UNLINK at a time on every master; resolves with how many keys it removed.
   * Nothing outside the prefix is touched.
   * @returns {Promise<number>}
   */
  clear() {
    return traced() ? this.#traced('clear', () => this.#walk(true)) : this.#walk(true)
  }

  /** Walks every master's keys under the prefix: counts sessions, or removes keys. */
  async #walk(/** @type {boolean} */ remove) {
    let total = 0
    for (const node of await this.#admin(() => this.#native.masters())) {
      let cursor = '0'
      do {
        const page = await this.#admin(() =>
          remove ? this.#native.clearPage(node, cursor, WALK_COUNT) : this.#native.scan(node, cursor, WALK_COUNT, false),
        )
        total += page.count
        cursor = page.cursor
      } while (cursor !== '0')
    }
    return total
  }

  /**
   * Checks the server's settings for sessions (the README's "Doctor").
   * @returns {Promise<import('./store').DoctorReport>}
   */
  doctor() {
    const native = this.#native
    return this.#admin(() => require('./doctor.js').examine(native))
  }

  /** What `util.inspect` and `console.log` show: where, never credentials. */
  [Symbol.for('nodejs.util.inspect.custom')]() {
    return `RedisSessionStore { target: ${JSON.stringify(this.#native.target)} }`
  }

  /**
   * Sends the calls already made, waits for every call in flight, then closes
   * the connection. Later calls reject with ERR_CLOSED.
   * @returns {Promise<void>}
   */
  async close() {
    this.#closed = true
    if (this.#batch !== null) this.#send()
    if (this.#batches > 0) await new Promise((resolve) => this.#idle.push(() => resolve(undefined)))
    await this.#native.close()
  }
}

/** Keys per SCAN page of length() and clear(). */
const WALK_COUNT = 1000

/**
 * The `count` option of an admin walk.
 * @param {unknown} options
 * @param {string} method
 */
function scanCount(options, method) {
  if (options === undefined) return WALK_COUNT
  const o = checkObject(options, `${method}() options`, { count: 'number' })
  const count = o.count ?? WALK_COUNT
  if (!Number.isInteger(count) || count < 1 || count > MAX_SCAN_COUNT) {
    throw invalid(`${method}() options.count must be a whole number from 1 to ${MAX_SCAN_COUNT} (MAX_SCAN_COUNT), got ${count}`)
  }
  return count
}

/**
 * @param {unknown} [redisOrOptions] options, or an ioredis client (migration form)
 * @param {unknown} [options] options, in the migration form
 * @returns {RedisSessionStore}
 */
function createRedisSessionStore(redisOrOptions, options) {
  if (isIoredis(redisOrOptions)) {
    return new RedisSessionStore(optionsFromIoredis(redisOrOptions, checkOptions(options, 'options')))
  }
  if (options !== undefined) {
    throw invalid('createRedisSessionStore takes (options) or (ioredisClient, options); the first argument is not an ioredis client')
  }
  return new RedisSessionStore(checkOptions(redisOrOptions, 'options'))
}

module.exports.createRedisSessionStore = createRedisSessionStore
module.exports.RedisSessionStoreError = RedisSessionStoreError
module.exports.limits = Object.freeze({ MAX_MERGE_PATHS, MAX_PATH_SEGMENTS, MAX_TTL_MS, MAX_PADDING, MAX_SCAN_COUNT })
