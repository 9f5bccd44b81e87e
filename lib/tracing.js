// @ts-check
'use strict'

// Tracing: every call of the public API, as the TracingChannel
// `relay-session-redis:call`, through one function, trace(op, ctx, call).

const diagnosticsChannel = require('node:diagnostics_channel')

/** @typedef {import('../store').CallContext} CallContext */

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

/**
 * `host:port` split for tracing (an IPv6 host has colons of its own).
 * @param {string} address
 */
function splitAddress(address) {
  const at = address.lastIndexOf(':')
  return at < 0 ? { serverAddress: address, serverPort: undefined } : { serverAddress: address.slice(0, at), serverPort: Number(address.slice(at + 1)) }
}

/**
 * The context of the call being made, until its op is queued (the batcher
 * takes it, to count the batch's size into it).
 * @type {CallContext | null}
 */
let current = null

/** The context of the call being made, once: the batcher's. */
function takeContext() {
  const context = current
  current = null
  return context
}

/**
 * Runs `call` as op `op` of the tracing channel, as TracingChannel's
 * tracePromise does (its stores bound in start, so an APM's context follows
 * the call) but without putting the call's value in the context: a get's
 * value is session data. The call's queued op takes the context (for its
 * batch size), and a failure's code joins it.
 * @template T
 * @param {CallContext['op']} op
 * @param {{prefix: string, address: string}} ctx the store's prefix and server
 * @param {() => Promise<T>} call
 * @returns {Promise<T>}
 */
function trace(op, ctx, call) {
  const { start, end, asyncStart, asyncEnd, error } = /** @type {NonNullable<typeof calls>} */ (calls)
  /** @type {CallContext} */
  const context = { op, prefix: ctx.prefix, ...splitAddress(ctx.address), batchSize: 0 }
  return start.runStores(context, () => {
    // A getter of a merge's paths may call the store: keep the outer context.
    const outer = current
    current = context
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
      current = outer
      end.publish(context)
    }
  })
}

module.exports = { traced, trace, takeContext }
