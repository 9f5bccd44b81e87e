// @ts-check
'use strict'

// The public face of the store: the class relay-session calls and its
// factory. Arguments are checked (lib/args.js, lib/options.js), calls are
// batched across to the addon (lib/batcher.js), traced (lib/tracing.js),
// and its errors carry a stable `code` (lib/errors.js). Everything that talks
// to Redis runs in the addon (index.js, generated from src/).

const { AddonStore, MAX_MERGE_PATHS, MAX_PATH_SEGMENTS, MAX_TTL_MS, MAX_PADDING, MAX_SCAN_COUNT, OpKind } = require('./lib/addon.js')
const { RedisSessionStoreError, fromAddon, invalid } = require('./lib/errors.js')
const { WALK_COUNT, checkId, checkTtl, checkUserId, describe, exceptOption, mergePairs, parseSession, scanCount, stringify } = require('./lib/args.js')
const { checkOptions, isIoredis, optionsFromIoredis } = require('./lib/options.js')
const { Batcher, onOutcomes } = require('./lib/batcher.js')
const { traced, trace } = require('./lib/tracing.js')

/** @typedef {import('./store').StoreOptions} StoreOptions */
/** @typedef {import('./store').SessionStoreData} SessionStoreData */

const { Get: GET, Set: SET, Delete: DELETE, Merge: MERGE, Lock: LOCK, Unlock: UNLOCK, IsLocked: IS_LOCKED, Touch: TOUCH } = OpKind

/** What ops without a ttl pass for it. */
const NO_TTL = Symbol('no ttl')

class RedisSessionStore {
  /** @type {import('./index').AddonStore} */
  #addon
  /** @type {Batcher} */
  #batcher
  /** Set by close(): later calls reject with ERR_CLOSED. */
  #closed = false
  /** The key prefix and the server, for tracing. */
  #where = { prefix: '', address: '' }
  /** What lock keys (and, with userIdPath, users' index keys) put after the prefix: no session id starts with one. @type {string[]} */
  #idPrefixes = []
  /** Whether the store keeps users' indexes (options.userIdPath). */
  #users = false
  /** Whether a get may be answered from the read cache (options.readCache, where the topology allows it). */
  #readCache = false
  /**
   * Sessions with a write in flight (set, merge, delete, touch), and how
   * many: a get of one goes to Redis, behind the write, never to the read
   * cache. @type {Map<string, number>}
   */
  #writing = new Map()

  /** @param {StoreOptions} options */
  constructor(options) {
    try {
      // checkOptions made the TLS PEM text strings, as the addon takes them.
      this.#addon = new AddonStore(/** @type {import('./index').StoreOptions} */ (options), onOutcomes)
    } catch (e) {
      throw fromAddon(e)
    }
    this.#batcher = new Batcher(this.#addon)
    const addon = this.#addon
    this.#where = {
      prefix: addon.prefix,
      get address() {
        return addon.address
      },
    }
    const userPrefix = addon.userPrefix
    this.#idPrefixes = userPrefix == null ? [addon.lockPrefix] : [addon.lockPrefix, userPrefix]
    this.#users = userPrefix != null
    this.#readCache = addon.readCache
    if (options.preloadScript) {
      // A failed preload is retried by the first merge (NOSCRIPT loads the
      // scripts), so its failure is not reported here.
      this.#addon.preload().catch(() => {})
    }
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
      throw fromAddon(e)
    }
  }

  /**
   * The outcome of a write of session `id`. With the read cache, the session
   * is marked as being written until then (its gets go to Redis); without,
   * no get looks, and the write pays nothing for it.
   * @param {string} id @param {Promise<any>} p
   */
  #written(id, p) {
    return this.#readCache ? this.#markedWhile(id, p) : this.#outcome(p)
  }

  /** @param {string} id @param {Promise<any>} p */
  async #markedWhile(id, p) {
    const writing = this.#writing
    writing.set(id, (writing.get(id) ?? 0) + 1)
    try {
      return await this.#outcome(p)
    } finally {
      const n = /** @type {number} */ (writing.get(id))
      if (n === 1) writing.delete(id)
      else writing.set(id, n - 1)
    }
  }

  #checkOpen() {
    if (this.#closed) throw new RedisSessionStoreError('the store is closed', 'ERR_CLOSED')
  }

  /**
   * @param {string} sessionId
   * @returns {Promise<SessionStoreData | null>}
   */
  get(sessionId) {
    return traced() ? trace('get', this.#where, () => this.#get(sessionId)) : this.#get(sessionId)
  }

  /** @param {string} sessionId */
  async #get(sessionId) {
    this.#checkOpen()
    checkId(sessionId, this.#idPrefixes)
    // Answered from memory when the read cache holds the session: no
    // crossing, no round trip, busy or idle (the reports come on a
    // connection of their own: src/link/tracking.rs). Not while a write of
    // this store to the same session is in flight: that write's result is
    // what the get must return. Idle (or with one call out: an unlock the
    // app did not wait for), the hit resolves in this tick; while more calls
    // are out, with the next outcomes that cross back: resolving each hit at
    // once under load broke the app's rhythm (its requests then share fewer
    // batches) and cost 20-25 % of its requests per second at 32 and 128
    // clients; holding it whenever a call was out cost one client a round
    // trip after each unlock (README, "Read cache").
    let text = this.#readCache && !this.#writing.has(sessionId) ? this.#addon.cached(sessionId) : null
    if (text !== null && this.#batcher.crowded) await this.#batcher.nextOutcomes()
    if (text === null) {
      const [b, p] = this.#batcher.enqueue(GET, sessionId, 0, 0)
      this.#batcher.sendIfFull(b)
      text = await this.#outcome(p)
      if (text === null) return null
    }
    try {
      return parseSession(text)
    } catch (e) {
      this.#addon.getWasCorrupt() // a failed get in stats(), as in tracing
      throw e
    }
  }

  /**
   * @param {string} sessionId
   * @param {SessionStoreData} data
   * @param {number} ttlMs
   * @returns {Promise<void>}
   */
  set(sessionId, data, ttlMs) {
    return traced() ? trace('set', this.#where, () => this.#set(sessionId, data, ttlMs)) : this.#set(sessionId, data, ttlMs)
  }

  /** @param {string} sessionId @param {SessionStoreData} data @param {number} ttlMs */
  async #set(sessionId, data, ttlMs) {
    this.#checkOpen()
    checkId(sessionId, this.#idPrefixes)
    if (typeof data !== 'object' || data === null || Array.isArray(data)) {
      throw invalid(`data must be an object, got ${describe(data)}`)
    }
    const ttl = checkTtl(ttlMs)
    const json = stringify(data, 'data')
    if (typeof json !== 'string' || json[0] !== '{') throw invalid('data must serialise to a JSON object')
    const [b, p] = this.#batcher.enqueue(SET, sessionId, ttl, 1)
    b.strings.push(json)
    this.#batcher.sendIfFull(b)
    await this.#written(sessionId, p)
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
    return traced() ? trace('merge', this.#where, () => this.#merge(sessionId, paths, ttlMs)) : this.#merge(sessionId, paths, ttlMs)
  }

  /** @param {string} sessionId @param {Record<string, unknown>} paths @param {number} ttlMs */
  async #merge(sessionId, paths, ttlMs) {
    this.#checkOpen()
    checkId(sessionId, this.#idPrefixes)
    const pairs = mergePairs(paths)
    const ttl = checkTtl(ttlMs)
    const [b, p] = this.#batcher.enqueue(MERGE, sessionId, ttl, pairs.length)
    for (let i = 0; i < pairs.length; i++) b.strings.push(pairs[i])
    this.#batcher.sendIfFull(b)
    await this.#written(sessionId, p)
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
   * @param {import('./store').CallOp} op @param {number} kind @param {unknown} sessionId @param {unknown} ttlMs
   */
  #simple(op, kind, sessionId, ttlMs) {
    return traced() ? trace(op, this.#where, () => this.#queueSimple(kind, sessionId, ttlMs)) : this.#queueSimple(kind, sessionId, ttlMs)
  }

  /** @param {number} kind @param {unknown} sessionId @param {unknown} ttlMs */
  async #queueSimple(kind, sessionId, ttlMs) {
    this.#checkOpen()
    checkId(sessionId, this.#idPrefixes)
    const ttl = ttlMs === NO_TTL ? 0 : checkTtl(ttlMs)
    const id = /** @type {string} */ (sessionId)
    const [b, p] = this.#batcher.enqueue(kind, id, ttl, 0)
    this.#batcher.sendIfFull(b)
    return kind === DELETE || kind === TOUCH ? await this.#written(id, p) : await this.#outcome(p)
  }

  /**
   * Counts since the store was created (see the README's "Stats").
   * @returns {import('./store').StoreStats}
   */
  stats() {
    return this.#addon.stats()
  }

  /**
   * 'connecting' until the first call or ping() opens the connection, then
   * 'ready', 'reconnecting' while it is lost, 'closed' after close().
   * @returns {import('./store').StoreStatus}
   */
  get status() {
    return this.#addon.status
  }

  /**
   * One PING (on a cluster, to every master), bounded like every call;
   * resolves with the round trip in ms.
   * @returns {Promise<number>}
   */
  ping() {
    return traced() ? trace('ping', this.#where, () => this.#admin(() => this.#addon.ping())) : this.#admin(() => this.#addon.ping())
  }

  /**
   * An admin call of the addon, with the store's checks and error codes.
   * @template T
   * @param {() => Promise<T>} call
   * @returns {Promise<T>}
   */
  async #admin(call) {
    this.#checkOpen()
    try {
      return await call()
    } catch (e) {
      throw fromAddon(e)
    }
  }

  /**
   * The ids of the live sessions of a user (options.userIdPath names where a
   * session holds its user's id): every session that exists and holds this
   * id there now, read from the user's index. Bounded like every call.
   * @param {string | number} userId
   * @returns {Promise<string[]>}
   */
  userSessions(userId) {
    return traced() ? trace('userSessions', this.#where, () => this.#userSessions(userId)) : this.#userSessions(userId)
  }

  /** @param {unknown} userId */
  async #userSessions(userId) {
    const user = this.#checkUser(userId)
    return this.#admin(() => this.#addon.userSessions(user))
  }

  /**
   * Ends every live session of a user but `options.except` (the current
   * one, say): "log out everywhere". Each is deleted only if unchanged since
   * it was found to hold the user. Resolves with how many it ended.
   * @param {string | number} userId
   * @param {{except?: string}} [options]
   * @returns {Promise<number>}
   */
  destroyUserSessions(userId, options) {
    return traced() ? trace('destroyUserSessions', this.#where, () => this.#destroyUserSessions(userId, options)) : this.#destroyUserSessions(userId, options)
  }

  /** @param {unknown} userId @param {unknown} options */
  async #destroyUserSessions(userId, options) {
    const user = this.#checkUser(userId)
    const except = exceptOption(options, this.#idPrefixes)
    return this.#admin(() => this.#addon.endUserSessions(user, except))
  }

  /** A user id as the index keys it, or ERR_INVALID_ARG. @param {unknown} userId */
  #checkUser(userId) {
    this.#checkOpen()
    if (!this.#users) {
      throw invalid('the store keeps no index of users: create it with the userIdPath option')
    }
    return checkUserId(userId)
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
    for (const node of await this.#admin(() => this.#addon.masters())) {
      let cursor = '0'
      do {
        const page = await this.#admin(() => this.#addon.walkPage(node, cursor, count, 'ids'))
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
    return traced() ? trace('length', this.#where, () => this.#walk(false)) : this.#walk(false)
  }

  /**
   * Removes every session and lock under the prefix, a SCAN page and one
   * UNLINK at a time on every master; resolves with how many keys it removed.
   * Nothing outside the prefix is touched.
   * @returns {Promise<number>}
   */
  clear() {
    return traced() ? trace('clear', this.#where, () => this.#walk(true)) : this.#walk(true)
  }

  /** Walks every master's keys under the prefix: counts sessions, or removes keys. */
  async #walk(/** @type {boolean} */ remove) {
    let total = 0
    for (const node of await this.#admin(() => this.#addon.masters())) {
      let cursor = '0'
      do {
        const page = await this.#admin(() => this.#addon.walkPage(node, cursor, WALK_COUNT, remove ? 'clear' : 'count'))
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
    const addon = this.#addon
    return this.#admin(() => require('./doctor.js').examine(addon))
  }

  /** What `util.inspect` and `console.log` show: where, never credentials. */
  [Symbol.for('nodejs.util.inspect.custom')]() {
    return `RedisSessionStore { target: ${JSON.stringify(this.#addon.target)} }`
  }

  /**
   * Sends the calls already made, waits for every call in flight, then closes
   * the connection. Later calls reject with ERR_CLOSED.
   * @returns {Promise<void>}
   */
  async close() {
    this.#closed = true
    await this.#batcher.drain()
    await this.#addon.close()
  }
}

/**
 * @param {unknown} [redisOrOptions] options, or an ioredis client (migration form)
 * @param {unknown} [options] options, in the migration form
 * @returns {RedisSessionStore}
 */
function createRedisSessionStore(redisOrOptions, options) {
  if (isIoredis(redisOrOptions)) {
    // What it read off the client is checked as options are (a Sentinel's masterName among them).
    return new RedisSessionStore(checkOptions(optionsFromIoredis(redisOrOptions, checkOptions(options, 'options')), 'options'))
  }
  if (options !== undefined) {
    throw invalid('createRedisSessionStore takes (options) or (ioredisClient, options); the first argument is not an ioredis client')
  }
  return new RedisSessionStore(checkOptions(redisOrOptions, 'options'))
}

module.exports.createRedisSessionStore = createRedisSessionStore
module.exports.RedisSessionStoreError = RedisSessionStoreError
module.exports.limits = Object.freeze({ MAX_MERGE_PATHS, MAX_PATH_SEGMENTS, MAX_TTL_MS, MAX_PADDING, MAX_SCAN_COUNT })
