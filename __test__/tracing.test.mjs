// The relay-session-redis:call TracingChannel: every call's start, end,
// asyncStart, asyncEnd (and error), with the op, prefix, server and batch
// size, and never the session id, session data or credentials.
import assert from 'node:assert/strict'
import diagnosticsChannel from 'node:diagnostics_channel'
import { readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { after, before, describe, it } from 'node:test'
import { newId, rejectsWith, session, useRedis } from './support/setup.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const redis = useRedis()
const TTL = 60_000
const channel = diagnosticsChannel.tracingChannel('relay-session-redis:call')

/** Subscribes to every event; `events` collects [event, a copy of the context]. */
function subscribe() {
  const events = []
  const handlers = {}
  for (const name of ['start', 'end', 'asyncStart', 'asyncEnd', 'error']) {
    handlers[name] = (context) => events.push([name, { ...context }])
  }
  channel.subscribe(handlers)
  return { events, stop: () => channel.unsubscribe(handlers) }
}

describe('tracing', () => {
  const secret = 's3cret-pw-for-tracing'
  let store
  before(async () => {
    await redis.ready()
    await redis.admin.call('ACL', 'SETUSER', 'tracer', 'on', `>${secret}`, '~*', '+@all')
    store = redis.store({
      ...(redis.cluster ? {} : { url: `redis://tracer:${secret}@127.0.0.1:${redis.server.port}` }),
      ...(redis.cluster ? { username: 'tracer', password: secret } : {}),
      prefix: 'traced:',
    })
  })
  after(() => redis.admin.call('ACL', 'DELUSER', 'tracer'))

  it('publishes start, end, asyncStart and asyncEnd for every call, with its op, prefix, server and batch size', async () => {
    const id = newId()
    const { events, stop } = subscribe()
    try {
      await store.set(id, session(id, { card: 'VISA-4242' }), TTL)
      await Promise.all([store.get(id), store.merge(id, { 'data.note': 'hello-private' }, TTL), store.isLocked(id)])
      await store.lock(id, TTL)
      await store.unlock(id)
      assert.equal(await store.touch(id, TTL), true)
      await store.ping()
      assert.equal(await store.length(), 1)
      await store.delete(id)
      assert.equal(await store.clear(), 0)
    } finally {
      stop()
    }
    const ops = ['set', 'get', 'merge', 'isLocked', 'lock', 'unlock', 'touch', 'ping', 'length', 'delete', 'clear']
    assert.deepEqual([...new Set(events.map(([, c]) => c.op))].sort(), [...ops].sort())
    for (const op of ops) {
      const mine = events.filter(([, c]) => c.op === op)
      assert.deepEqual(mine.map(([e]) => e), ['start', 'end', 'asyncStart', 'asyncEnd'], op)
      const [, c] = mine[2]
      assert.equal(c.prefix, 'traced:')
      assert.equal(c.serverAddress, '127.0.0.1')
      assert.equal(c.serverPort, redis.server.port)
      const admin = ['ping', 'length', 'clear'].includes(op)
      assert.equal(c.batchSize, admin ? 0 : op === 'get' || op === 'merge' || op === 'isLocked' ? 3 : 1, op)
      assert.equal(c.errorCode, undefined)
      assert.equal('result' in c, false, `${op}: the call's value is not in the context`)
    }
    const text = JSON.stringify(events)
    for (const hidden of [id, 'VISA-4242', 'hello-private', secret, 'tracer']) {
      assert.equal(text.includes(hidden), false, `the events show ${hidden}`)
    }
  })

  it('publishes error with the code when a call fails, in Rust or in the argument checks', async () => {
    const id = newId()
    await redis.admin.hset(`traced:${id}`, 'f', 'v')
    const { events, stop } = subscribe()
    try {
      await rejectsWith(store.get(id), 'ERR_REDIS')
      await rejectsWith(store.lock(id, -1), 'ERR_INVALID_ARG')
    } finally {
      stop()
      await redis.admin.del(`traced:${id}`)
    }
    assert.deepEqual(events.map(([e, c]) => `${c.op}:${e}`), [
      'get:start', 'get:end', 'get:error', 'get:asyncStart', 'get:asyncEnd',
      'lock:start', 'lock:end', 'lock:error', 'lock:asyncStart', 'lock:asyncEnd',
    ])
    const [get, lock] = events.filter(([e]) => e === 'error').map(([, c]) => c)
    assert.equal(get.errorCode, 'ERR_REDIS')
    assert.equal(get.batchSize, 1)
    assert.equal(get.error.code, 'ERR_REDIS')
    assert.equal(lock.errorCode, 'ERR_INVALID_ARG')
    assert.equal(lock.batchSize, 0, 'refused before it was queued')
    assert.equal(JSON.stringify({ ...get, error: get.error.message }).includes(id), false)
  })

  it('binds a store in start, so a subscriber context follows the call', async () => {
    const { AsyncLocalStorage } = await import('node:async_hooks')
    const als = new AsyncLocalStorage()
    channel.start.bindStore(als, (context) => ({ span: context.op }))
    const seen = []
    const handlers = { asyncEnd: () => seen.push(als.getStore()?.span) }
    channel.subscribe(handlers)
    try {
      await store.ping()
      await store.isLocked(newId())
    } finally {
      channel.unsubscribe(handlers)
      channel.start.unbindStore(als)
    }
    assert.deepEqual(seen, ['ping', 'isLocked'])
  })

  it('publishes nothing, and builds no context, once nobody subscribes', async () => {
    // Watches the channels themselves (their methods shadowed on the
    // objects, which are the store's too) without subscribing to them.
    const touched = []
    const channels = ['start', 'end', 'asyncStart', 'asyncEnd', 'error'].map((name) => diagnosticsChannel.channel(`tracing:relay-session-redis:call:${name}`))
    const calls = async () => {
      for (const ch of channels) {
        ch.publish = () => touched.push(ch.name)
        ch.runStores = (data, fn, thisArg, ...args) => (touched.push(ch.name), fn.apply(thisArg, args))
      }
      try {
        await store.get(newId())
        await store.ping()
      } finally {
        for (const ch of channels) {
          delete ch.publish
          delete ch.runStores
        }
      }
    }
    // With a subscriber, the watch sees the calls (so that it can see them).
    const { stop } = subscribe()
    await calls().finally(stop)
    assert.ok(touched.length >= 4, touched.join(', '))
    touched.length = 0
    assert.equal(channel.hasSubscribers, false)
    await calls()
    assert.deepEqual(touched, [])
  })
})

// Last in the file: the README's subscriber cannot be unsubscribed.
describe("the README's OpenTelemetry subscriber", () => {
  it('turns calls into client spans with the context as attributes', async () => {
    const { trace, SpanKind, SpanStatusCode } = await import('@opentelemetry/api')
    const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = await import('@opentelemetry/sdk-trace-base')
    const exporter = new InMemorySpanExporter()
    trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }))
    // The code block of the README's "Tracing", as written there.
    const readme = readFileSync(path.join(root, 'README.md'), 'utf8')
    const code = /```js\n(import diagnosticsChannel[\s\S]*?)```/.exec(readme)[1]
    assert.ok(code.split('\n').length <= 16, 'about 15 lines')
    const file = path.join(root, '__test__', `.readme-otel-${process.pid}.mjs`)
    writeFileSync(file, code)
    try {
      await import(pathToFileURL(file).href)
    } finally {
      rmSync(file)
    }
    const store = redis.store()
    const id = newId()
    await store.set(id, session(id), TTL)
    await store.get(id)
    await redis.admin.hset(`sess:${id}-hash`, 'f', 'v')
    await rejectsWith(store.get(`${id}-hash`), 'ERR_REDIS')
    await redis.admin.del(`sess:${id}-hash`)
    const spans = exporter.getFinishedSpans()
    assert.deepEqual(spans.map((s) => s.name), ['redis set', 'redis get', 'redis get'])
    for (const s of spans) {
      assert.equal(s.kind, SpanKind.CLIENT)
      assert.equal(s.attributes['db.system.name'], 'redis')
      assert.equal(s.attributes['server.address'], '127.0.0.1')
      assert.equal(s.attributes['server.port'], redis.server.port)
      assert.equal(s.attributes['relay_session.prefix'], 'sess:')
      assert.equal(s.attributes['db.operation.batch.size'], 1)
      assert.equal(JSON.stringify(s.attributes).includes(id), false)
    }
    assert.equal(spans[1].status.code, SpanStatusCode.UNSET)
    assert.deepEqual(spans[2].status, { code: SpanStatusCode.ERROR, message: 'ERR_REDIS' })
  })
})
