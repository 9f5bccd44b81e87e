// @ts-check
'use strict'

// The options of createRedisSessionStore: their types checked here (the
// addon half checks their values: URLs, ranges, combinations), and the
// migration form, which reads them off an ioredis client.

const { optionTypes } = require('./addon.js')
const { checkObject } = require('./args.js')
const { invalid } = require('./errors.js')

/** @typedef {import('../store').StoreOptions} StoreOptions */

/**
 * The type each option is checked for, by object ('' for the store's own),
 * from the option structs of src/addon/options.rs, where each option is
 * declared once.
 * @type {Record<string, Record<string, string>>}
 */
const OPTION_TYPES = { '': {}, tls: {}, cluster: {}, sentinel: {} }
for (const [object, field, type] of optionTypes()) OPTION_TYPES[object][field] = type

/**
 * @param {unknown} options
 * @param {string} where
 * @returns {StoreOptions}
 */
function checkOptions(options, where) {
  if (options === undefined) return {}
  const o = checkObject(options, where, OPTION_TYPES[''])
  if (o.tls) o.tls = checkObject(o.tls, `${where}.tls`, OPTION_TYPES.tls)
  if (o.cluster) o.cluster = checkObject(o.cluster, `${where}.cluster`, OPTION_TYPES.cluster)
  if (o.cluster && !o.cluster.nodes) throw invalid(`${where}.cluster.nodes must be a non-empty array of URL strings`)
  if (o.sentinel) {
    o.sentinel = checkObject(o.sentinel, `${where}.sentinel`, OPTION_TYPES.sentinel)
    if (!o.sentinel.nodes) throw invalid(`${where}.sentinel.nodes must be a non-empty array of URL strings`)
    if (!o.sentinel.masterName) throw invalid(`${where}.sentinel.masterName must be a non-empty string`)
  }
  return /** @type {StoreOptions} */ (o)
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

module.exports = { OPTION_TYPES, checkOptions, isIoredis, optionsFromIoredis }
