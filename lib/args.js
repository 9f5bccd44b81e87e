// @ts-check
'use strict'

// The checks of the public API's arguments, and the JSON work of a session
// (JSON.stringify / JSON.parse in V8). A check runs here, once: the addon
// half relies on it (what it refuses itself, it refuses for its own reasons).

const { MAX_MERGE_PATHS, MAX_PATH_SEGMENTS, MAX_TTL_MS, MAX_SCAN_COUNT } = require('./addon.js')
const { RedisSessionStoreError, invalid } = require('./errors.js')

/** @typedef {import('../store').SessionStoreData} SessionStoreData */

// With the u flag, a surrogate pair is one code point: only lone surrogates
// match. They have no UTF-8 form, so two ids differing only in one would
// reach Redis as the same key.
const LONE_SURROGATE = /[\uD800-\uDFFF]/u

/** A path for a message: quoted, and cut when long. @param {string} path */
const quotePath = (path) => `paths['${path.length > 80 ? `${path.slice(0, 80)}…` : path}']`

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
 * A session id: a non-empty, well-formed string that does not start with the
 * store's lock prefix (the key of id `lock:x` would be the lock key of `x`)
 * nor, with userIdPath, its user prefix (`user:x` would be user x's index).
 * @param {unknown} id @param {string[]} prefixes the lock prefix, then the user prefix if any
 * @param {string} [name] what the caller called the argument
 */
function checkId(id, prefixes, name = 'sessionId') {
  if (typeof id !== 'string' || id.length === 0) {
    throw invalid(`${name} must be a non-empty string, got ${typeof id === 'string' ? 'an empty string' : describe(id)}`)
  }
  if (LONE_SURROGATE.test(id)) {
    throw invalid(`${name} must be a well-formed string: it holds a lone surrogate (\\ud800-\\udfff)`)
  }
  for (let i = 0; i < prefixes.length; i++) {
    if (id.startsWith(prefixes[i])) {
      throw invalid(
        i === 0
          ? `${name} must not start with the lock prefix ${JSON.stringify(prefixes[i])}: its key would be the lock key of another session`
          : `${name} must not start with the user prefix ${JSON.stringify(prefixes[i])}: its key would be the index key of a user`,
      )
    }
  }
}

/**
 * A user's id as sessions hold it at userIdPath: a non-empty, well-formed
 * string, or a finite number (indexed as String(n), as JSON writes it).
 * @param {unknown} userId
 * @returns {string}
 */
function checkUserId(userId) {
  if (typeof userId === 'number' && Number.isFinite(userId)) return String(userId)
  if (typeof userId !== 'string' || userId.length === 0) {
    throw invalid(`userId must be a non-empty string or a finite number, got ${typeof userId === 'string' ? 'an empty string' : describe(userId)}`)
  }
  if (LONE_SURROGATE.test(userId)) {
    throw invalid('userId must be a well-formed string: it holds a lone surrogate (\\ud800-\\udfff)')
  }
  return userId
}

/**
 * destroyUserSessions' options: the session id to keep, if any.
 * @param {unknown} options @param {string[]} prefixes
 * @returns {string | undefined}
 */
function exceptOption(options, prefixes) {
  if (options === undefined) return undefined
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw invalid(`options must be an object, got ${describe(options)}`)
  }
  for (const key of Object.keys(options)) {
    if (key !== 'except') throw invalid(`options.${key} is not an option of destroyUserSessions (it takes except)`)
  }
  const except = /** @type {{except?: unknown}} */ (options).except
  if (except === undefined) return undefined
  checkId(except, prefixes, 'options.except')
  return /** @type {string} */ (except)
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

module.exports = { LONE_SURROGATE, WALK_COUNT, checkObject, checkId, checkTtl, checkUserId, describe, exceptOption, isPlainObject, mergePairs, parseSession, scanCount, stringify }
