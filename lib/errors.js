// @ts-check
'use strict'

// The error class of the public API, and the one way an error of the addon
// half becomes one. The codes are defined once, in Rust (src/errors.rs), and
// come from there: a failed op of a batch crosses as the number of its code
// (OutcomeCode.Failed + the code's place in ErrorCode) beside its message, an
// admin call's or the constructor's error as an Error whose `code` is the
// code.

const addon = require('./addon.js')

const { OutcomeCode } = addon

/** @typedef {import('../store').ErrorCode} Code */

/** The codes in the order of their numbers (index.d.ts types ErrorCode as a union only). @type {readonly Code[]} */
const CODES = Object.freeze(Object.values(/** @type {Record<string, Code>} */ (/** @type {any} */ (addon).ErrorCode)))
const KNOWN = new Set(CODES)

class RedisSessionStoreError extends Error {
  /**
   * @param {string} message
   * @param {Code} code
   */
  constructor(message, code) {
    super(message)
    this.name = 'RedisSessionStoreError'
    /** @type {Code} */
    this.code = code
  }
}

/** @param {string} message */
const invalid = (message) => new RedisSessionStoreError(message, 'ERR_INVALID_ARG')

/** How a failed op of a batch crossed: its code's number and its message. */
class Failure {
  /** @param {number} outcome OutcomeCode.Failed + the code's number @param {string} message */
  constructor(outcome, message) {
    this.code = CODES[outcome - OutcomeCode.Failed] ?? 'ERR_REDIS'
    this.message = message
  }
}

/**
 * A coded error from the addon, as a RedisSessionStoreError: a failed
 * op's Failure, or an Error napi threw with the code as `code`. Called in the
 * public method's catch, so the new error's stack shows the caller. Anything
 * else passes unchanged.
 * @param {unknown} e
 */
function fromAddon(e) {
  if (e instanceof Failure) return new RedisSessionStoreError(e.message, e.code)
  const code = /** @type {any} */ (e)?.code
  if (e instanceof Error && KNOWN.has(code)) return new RedisSessionStoreError(e.message, code)
  return e
}

module.exports = { RedisSessionStoreError, Failure, fromAddon, invalid }
