// @ts-check
'use strict'

// The batching policy and the crossing's JavaScript end: calls made in one
// tick cross into Rust together, as one batch (one Redis pipeline), and their
// outcomes come back through one callback, onOutcomes, for every store of
// the thread.

const { OutcomeCode } = require('./addon.js')
const { Failure } = require('./errors.js')
const { takeContext } = require('./tracing.js')

/** @typedef {import('../store').CallContext} CallContext */

const { True: TRUE, False: FALSE, Text: TEXT, Null: NULL, Failed: FAILED } = OutcomeCode

// The batches in flight in this thread, by number: their resolvers, how many
// of their ops have not settled, and what to tell their store when all have.
// Outcomes come from Rust through one channel per store, all into
// `onOutcomes`, which holds no store: a store nobody uses can be collected.
/** @type {Map<number, {settle: (Function | null)[], left: number, ops: number, done: (ops: number) => void}>} */
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
 * OutcomeCode (a failure: Failed plus its error code's number), its text or
 * error message.
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

// Gets a busy store answered from memory: they resolve with the next
// outcomes that cross back, after them (Batcher.nextOutcomes).
/** @type {(() => void)[]} */
let held = []

/** @param {number[]} batches @param {number[]} slots @param {number[]} codes @param {(string | null)[]} values */
function settleOutcomes(batches, slots, codes, values) {
  for (let i = 0; i < batches.length; i++) {
    const b = inFlight.get(batches[i])
    if (b === undefined) continue
    const slot = slots[i]
    const code = codes[i]
    const resolve = b.settle[2 * slot]
    // Settled already: an op whose delivery a panic may have cut short is
    // failed again after it (src/addon/crossing.rs), and counts once.
    if (resolve === null) continue
    const reject = /** @type {Function} */ (b.settle[2 * slot + 1])
    b.settle[2 * slot] = null
    if (code >= FAILED) reject(new Failure(code, values[i] ?? ''))
    else resolve(code === TEXT ? values[i] : code === NULL ? null : code === TRUE ? true : code === FALSE ? false : undefined)
    if (--b.left === 0) {
      inFlight.delete(batches[i])
      b.done(b.ops)
    }
  }
  if (held.length > 0) {
    const resolve = held
    held = []
    for (const r of resolve) r()
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
  /** resolve, reject, resolve, reject, … one pair per op (a settled op's resolve is null) @type {(Function | null)[]} */ settle = []
  /** Whether it gathers calls made alone until the turn's check phase. */
  gathering = false
  /** When its first call was made: a call's bound counts from the call, not from the crossing. */
  since = performance.now()
  /** The tracing contexts of its calls, when someone subscribed. @type {CallContext[] | null} */
  traces = null
}

/** One store's batches: the one it is gathering, and those in flight. */
class Batcher {
  /** @type {import('../index').AddonStore} */
  #addon
  /** @type {Batch | null} */
  #batch = null
  /** How many batches this store has opened; the last one's number. */
  #opened = 0
  /** Batches of this store in flight, and who waits for none (close()). */
  #batches = 0
  /** @type {(() => void)[]} */
  #idle = []
  /** Ops of this store in flight (in its batches out). */
  #opsOut = 0
  #batchDone = (/** @type {number} */ ops) => {
    this.#opsOut -= ops
    if (--this.#batches === 0) for (const resolve of this.#idle.splice(0)) resolve()
  }

  /**
   * Whether more than one op of this store is out: the app is busy, not just
   * finishing a call it did not wait for (an unlock after the response).
   */
  get crowded() {
    return this.#opsOut > 1
  }

  /** Resolves after the next outcomes that cross back (this store has a batch out). */
  nextOutcomes() {
    return /** @type {Promise<void>} */ (new Promise((resolve) => held.push(resolve)))
  }

  /** @param {import('../index').AddonStore} addon */
  constructor(addon) {
    this.#addon = addon
  }

  /**
   * Queues one op; its strings are pushed by the caller right after.
   * @returns {[Batch, Promise<any>]}
   */
  enqueue(/** @type {number} */ kind, /** @type {string} */ id, /** @type {number} */ ttl, /** @type {number} */ count) {
    let b = this.#batch
    if (b === null) {
      b = this.#batch = new Batch()
      // The flush knows its batch by number, not by reference: a batch sent
      // full before its flush runs must not be kept alive (its strings are
      // the sessions' JSON) by a flush still waiting in the queue.
      const number = ++this.#opened
      queueMicrotask(() => this.#flush(number, false))
    }
    const context = takeContext()
    if (context !== null) (b.traces ??= []).push(context)
    b.kinds.push(kind)
    b.ids.push(id)
    b.ttls.push(ttl)
    b.counts.push(count)
    const settle = b.settle
    const promise = new Promise((resolve, reject) => settle.push(resolve, reject))
    return [b, promise]
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

  sendIfFull(/** @type {Batch} */ b) {
    if (b.kinds.length >= (b.gathering ? MAX_GATHERED : MAX_BATCH)) this.#send()
  }

  #send() {
    const b = /** @type {Batch} */ (this.#batch)
    this.#batch = null
    if (b.traces !== null) for (const t of b.traces) t.batchSize = b.kinds.length
    const id = (lastBatch = (lastBatch + 1) >>> 0)
    if (inFlight.size === 0) keepAlive.ref()
    const ops = b.kinds.length
    inFlight.set(id, { settle: b.settle, left: ops, ops, done: this.#batchDone })
    this.#batches++
    this.#opsOut += ops
    try {
      this.#addon.batch(id, b.kinds, b.ids, b.ttls, b.counts, b.strings, performance.now() - b.since)
    } catch (e) {
      // Refused before anything was sent: every op of the batch fails with it.
      inFlight.delete(id)
      if (inFlight.size === 0) keepAlive.unref()
      for (let i = 1; i < b.settle.length; i += 2) /** @type {Function} */ (b.settle[i])(e)
      this.#batchDone(ops)
    }
  }

  /** Sends the calls already made; resolves once no batch is in flight. */
  async drain() {
    if (this.#batch !== null) this.#send()
    if (this.#batches > 0) await new Promise((resolve) => this.#idle.push(() => resolve(undefined)))
  }
}

module.exports = { Batcher, onOutcomes }
