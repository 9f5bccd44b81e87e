// The app of `npm run bench:app`, in a process of its own:
//   node bench/app-server.mjs '{"store":"store","redisPort":6379,"size":1024}'
// An Express 5 app behind the relay-session stand-in (session-middleware.mjs)
// with one of these stores: this one ("store"), this one with a subscriber
// on its tracing channel ("store-traced": a span's worth of work per event),
// another built checkout of it ("baseline", from APP_BASELINE), this one with
// the read cache ("store-cache"), without it ("store-nocache"), with
// users' indexes (userIdPath: "store-users"), the 1.x
// adapter on ioredis with auto-pipelining ("js-auto"), JSON text in a Map
// ("map": what the app costs with a store that does no I/O but hands out a
// fresh object, as every store must), or the objects themselves in a Map
// ("zero": no JSON and no I/O, the app's own cost). Prints the port it
// listens on. With "processes" above 1, that many app processes share the
// port (node:cluster, round-robin, no stickiness), each with its own store:
// the deployment where other instances' writes change what one holds.
//   GET  /me      reads the session (a new visitor's first save: set)
//   POST /cart    takes the lock, replaces data.cart, saves, unlocks (a cart
//                 that is not an array any more is answered with x-cart-corrupt)
//   POST /field   sets data.prefs.theme, saves (polling isLocked first)
//   POST /login   rotates the id, sets data.userId, saves
//   POST /logout  removes data.userId (sent as undefined), saves
import cluster from 'node:cluster'
import diagnosticsChannel from 'node:diagnostics_channel'
import { createRequire } from 'node:module'
import path from 'node:path'
import express from 'express'
import { Redis } from 'ioredis'
import { createRedisSessionStore } from 'relay-session-redis'
import { createJsAdapter } from '../harness/js-adapter.mjs'
import { makeSession } from './sessions.mjs'
import { sessionMiddleware } from './session-middleware.mjs'

const { store: kind, redisPort, size, processes = 1 } = JSON.parse(process.argv[2])
const url = `redis://127.0.0.1:${redisPort}`

if (processes > 1 && cluster.isPrimary) {
  // The primary only hands connections to the workers, in turn.
  cluster.schedulingPolicy = cluster.SCHED_RR
  let listening = 0
  let port = 0
  for (let i = 0; i < processes; i++) {
    cluster.fork().on('listening', (address) => {
      port = address.port
      if (++listening === processes) process.stdout.write(`${port}\n`)
    })
  }
  cluster.on('exit', (_w, code, signal) => {
    if (signal !== 'SIGTERM') process.exit(code ?? 1)
  })
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM')
    process.exit(0)
  })
} else {
  await serve()
}

/** A store that keeps the objects themselves in a Map: no JSON, no I/O. */
function createZeroStore() {
  const sessions = new Map()
  const locks = new Set()
  return {
    async get(id) {
      return sessions.get(id) ?? null
    },
    async set(id, data) {
      sessions.set(id, data)
    },
    async delete(id) {
      sessions.delete(id)
      locks.delete(id)
    },
    async merge(id, paths) {
      const doc = sessions.get(id)
      if (!doc) return
      for (const [path, value] of Object.entries(paths)) {
        const segs = path.split('.')
        let o = doc
        for (const s of segs.slice(0, -1)) o = typeof o[s] === 'object' && o[s] !== null ? o[s] : (o[s] = {})
        if (value === undefined) delete o[segs.at(-1)]
        else o[segs.at(-1)] = value
      }
    },
    async lock(id) {
      if (locks.has(id)) return false
      locks.add(id)
      return true
    },
    async unlock(id) {
      locks.delete(id)
    },
    async isLocked(id) {
      return locks.has(id)
    },
  }
}

/** A store that keeps JSON text in a Map: the same calls, no I/O. */
function createMapStore() {
  const texts = new Map()
  const locks = new Map()
  const live = (m, k) => {
    const e = m.get(k)
    if (e && e.expires > Date.now()) return e
    m.delete(k)
    return null
  }
  return {
    async get(id) {
      const e = live(texts, id)
      return e ? JSON.parse(e.text) : null
    },
    async set(id, data, ttlMs) {
      texts.set(id, { text: JSON.stringify(data), expires: Date.now() + ttlMs })
    },
    async delete(id) {
      texts.delete(id)
      locks.delete(id)
    },
    async merge(id, paths, ttlMs) {
      const e = live(texts, id)
      if (!e) return
      const doc = JSON.parse(e.text)
      for (const [path, value] of Object.entries(paths)) {
        const segs = path.split('.')
        let o = doc
        for (const s of segs.slice(0, -1)) o = typeof o[s] === 'object' && o[s] !== null ? o[s] : (o[s] = {})
        if (value === undefined) delete o[segs.at(-1)]
        else o[segs.at(-1)] = JSON.parse(JSON.stringify(value))
      }
      texts.set(id, { text: JSON.stringify(doc), expires: Date.now() + ttlMs })
    },
    async lock(id, ttlMs) {
      if (live(locks, id)) return false
      locks.set(id, { expires: Date.now() + ttlMs })
      return true
    },
    async unlock(id) {
      locks.delete(id)
    },
    async isLocked(id) {
      return live(locks, id) !== null
    },
  }
}

/** The app, with its own store, listening on the port (shared, in a worker). */
async function serve() {
  if (kind === 'store-traced') {
    // What an APM's subscriber does per call: a span object with the
    // context's attributes, opened at start and closed at asyncEnd.
    const spans = []
    diagnosticsChannel.tracingChannel('relay-session-redis:call').subscribe({
      start: (c) => (c.span = { name: c.op, attributes: { prefix: c.prefix, server: c.serverAddress, port: c.serverPort }, t0: performance.now() }),
      end: () => {},
      asyncStart: () => {},
      asyncEnd: (c) => {
        c.span.attributes.batchSize = c.batchSize
        c.span.ms = performance.now() - c.span.t0
        if (spans.push(c.span) > 1000) spans.length = 0
      },
      error: (c) => (c.span.error = c.errorCode),
    })
  }

  /**
   * The read cache without its busy rule (a bench-only variant, for the
   * README's "Read cache"): every get of a held session is answered at once,
   * even while a batch is out.
   */
  const store =
    kind === 'store' || kind === 'store-traced'
      ? createRedisSessionStore({ url })
      : kind === 'store-cache'
        ? createRedisSessionStore({ url, readCache: true })
      : kind === 'store-nocache'
        ? createRedisSessionStore({ url, readCache: false })
      : kind === 'store-users'
        ? createRedisSessionStore({ url, userIdPath: 'data.userId' })
      : kind === 'baseline'
        ? createRequire(import.meta.url)(path.resolve(process.env.APP_BASELINE, 'store.js')).createRedisSessionStore({ url })
        : kind === 'js-auto'
        ? createJsAdapter(new Redis({ host: '127.0.0.1', port: redisPort, enableAutoPipelining: true, maxRetriesPerRequest: 1 }))
        : kind === 'zero'
          ? createZeroStore()
          : createMapStore()

  /** A new visitor's data: about `size` bytes, most of it in data.history. */
  const initialData = (id) => {
    const data = makeSession(id, size).data
    data.history = data.cart
    data.cart = []
    return data
  }

  const app = express()
  app.disable('x-powered-by')
  app.disable('etag')
  app.use(sessionMiddleware(store, { initialData }))

  /** Saves a session that is new (its first save), then answers. */
  const done = async (req, res, body) => {
    if (req.session.fresh) await req.session.save()
    res.json(body)
  }

  app.get('/me', async (req, res) => {
    await done(req, res, { name: req.session.data.user?.name ?? null, userId: req.session.data.userId ?? null })
  })

  let n = 0
  app.post('/cart', async (req, res) => {
    const s = req.session
    if (s.fresh) await s.save()
    if (!(await s.lock())) return res.status(409).json({ error: 'busy' })
    try {
      // The 1.x adapter's cjson stores [] as {}: the app starts a new cart then
      // (as an app that checks would), and says so, so each store does the same
      // work and the load counts the corrupted carts apart from errors.
      const stored = s.data.cart
      if (!Array.isArray(stored)) res.set('x-cart-corrupt', '1')
      const cart = !Array.isArray(stored) || stored.length >= 20 ? [] : [...stored]
      cart.push({ sku: `SKU-${n++ % 1000}`, qty: 1 })
      s.set('cart', cart)
      await s.save()
    } finally {
      await s.unlock()
    }
    res.json({ items: s.data.cart.length })
  })

  app.post('/field', async (req, res) => {
    const s = req.session
    if (s.fresh) await s.save()
    s.set('prefs.theme', n++ % 2 ? 'dark' : 'light')
    await s.save()
    res.json({ ok: true })
  })

  app.post('/login', async (req, res) => {
    const s = req.session
    if (s.fresh) await s.save()
    await s.rotateId()
    // One of 10,000 users (five digits, as before), so that each user's
    // index holds a few sessions, as an app's do.
    s.set('userId', 10000 + Math.floor(Math.random() * 10000))
    await s.save()
    res.json({ ok: true })
  })

  app.post('/logout', async (req, res) => {
    const s = req.session
    if (s.fresh) await s.save()
    s.remove('userId')
    await s.save()
    res.json({ ok: true })
  })

  app.use((err, req, res, _next) => {
    res.status(500).json({ error: String(err?.code ?? err?.message ?? err) })
  })

  const server = app.listen(0, '127.0.0.1', () => {
    // A worker's port is the primary's to print.
    if (cluster.isPrimary) process.stdout.write(`${server.address().port}\n`)
  })
  server.keepAliveTimeout = 60_000
  process.on('SIGTERM', () => process.exit(0))
}
