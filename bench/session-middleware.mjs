// A stand-in for relay-session's Express middleware, written from the store
// contract (shared store-contract.md §2): the store calls it makes, when, and
// with what. relay-session itself cannot be installed here.
//   - every request: get(id), following meta.redirectTo (depth 10);
//   - a new session's first save: set(id, whole, ttl);
//   - later saves: merge(id, dirty dot-paths, ttl), a removed property sent
//     as undefined, a replaced array as one path;
//   - rotateId(): set(newId, copy, ttl), then merge(oldId, {data: null,
//     meta: {redirectTo: newId}}, grace);
//   - lock(): lock(id, ttl) retried with linear backoff; unlock() by the
//     owner, again when the request closes while owning it; every non-owner
//     polls isLocked(id) before it saves;
//   - destroy(): delete(id).
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'

const COOKIE = 'sid'
const REDIRECT_DEPTH = 10

/** @param {import('node:http').IncomingMessage} req */
function readCookie(req) {
  const header = req.headers.cookie
  if (!header) return null
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0 && part.slice(0, eq).trim() === COOKIE) return part.slice(eq + 1).trim()
  }
  return null
}

const newId = () => randomBytes(32).toString('hex')

class Session {
  constructor(mw, res, id, record, fresh) {
    this.mw = mw
    this.res = res
    this.id = id
    this.fresh = fresh
    this.data = record.data
    this.meta = record.meta
    /** @type {Record<string, unknown>} dirty dot-paths and their values */
    this.dirty = {}
    this.owner = false
  }

  /** Sets data[path] (a dot path under data) and marks it dirty. */
  set(path, value) {
    const segs = path.split('.')
    let o = this.data
    for (const s of segs.slice(0, -1)) o = o[s] ??= {}
    o[segs.at(-1)] = value
    this.dirty[`data.${path}`] = value
  }

  /** Removes data[path]: sent as undefined. */
  remove(path) {
    const segs = path.split('.')
    let o = this.data
    for (const s of segs.slice(0, -1)) o = o?.[s]
    if (o) delete o[segs.at(-1)]
    this.dirty[`data.${path}`] = undefined
  }

  async save() {
    const { store, ttlMs } = this.mw
    this.meta.expiresAt = Date.now() + ttlMs
    if (this.fresh) {
      await store.set(this.id, { data: this.data, meta: this.meta }, ttlMs)
      this.fresh = false
      this.dirty = {}
      return
    }
    if (!this.owner) {
      // A non-owner waits while another request holds the lock.
      for (let i = 0; i < this.mw.lockRetries && (await store.isLocked(this.id)); i++) await sleep(this.mw.lockBaseMs * (i + 1))
    }
    this.dirty['meta.expiresAt'] = this.meta.expiresAt
    const paths = this.dirty
    this.dirty = {}
    await store.merge(this.id, paths, ttlMs)
  }

  /** Takes the session's lock, retrying with linear backoff; false when it gave up. */
  async lock() {
    const { store, lockTtlMs, lockRetries, lockBaseMs } = this.mw
    for (let i = 0; i <= lockRetries; i++) {
      if (await store.lock(this.id, lockTtlMs)) {
        this.owner = true
        return true
      }
      if (i < lockRetries) await sleep(lockBaseMs * (i + 1))
    }
    return false
  }

  async unlock() {
    if (!this.owner) return
    this.owner = false
    await this.mw.store.unlock(this.id)
  }

  /** A new id for the same session; the old one redirects for the grace period. */
  async rotateId() {
    const { store, ttlMs, graceMs } = this.mw
    const oldId = this.id
    this.id = newId()
    this.meta = { ...this.meta, id: this.id }
    await store.set(this.id, { data: this.data, meta: this.meta }, ttlMs)
    await store.merge(oldId, { data: null, meta: { redirectTo: this.id } }, graceMs)
    this.dirty = {}
    this.res.setHeader('set-cookie', `${COOKIE}=${this.id}; Path=/; HttpOnly`)
  }

  async destroy() {
    await this.mw.store.delete(this.id)
  }
}

/**
 * @param {any} store a SessionStoreAdapter
 * @param {{ttlMs?: number, graceMs?: number, initialData?: (id: string) => Record<string, unknown>}} [options]
 */
export function sessionMiddleware(store, options = {}) {
  const mw = {
    store,
    ttlMs: options.ttlMs ?? 86_400_000,
    graceMs: options.graceMs ?? 5000,
    lockTtlMs: 5000,
    lockRetries: 10,
    lockBaseMs: 50,
    initialData: options.initialData ?? (() => ({})),
  }
  return async (req, res, next) => {
    try {
      let id = readCookie(req)
      let record = id ? await store.get(id) : null
      for (let depth = 0; record?.meta?.redirectTo && depth < REDIRECT_DEPTH; depth++) {
        id = record.meta.redirectTo
        record = await store.get(id)
      }
      let session
      if (record?.data) {
        session = new Session(mw, res, id, record, false)
      } else {
        id = newId()
        const now = Date.now()
        session = new Session(mw, res, id, { data: mw.initialData(id), meta: { id, createdAt: now, expiresAt: now + mw.ttlMs } }, true)
        res.setHeader('set-cookie', `${COOKIE}=${id}; Path=/; HttpOnly`)
      }
      req.session = session
      // The owner's lock goes when the request closes while it still holds it.
      res.on('close', () => {
        if (session.owner) session.unlock().catch(() => {})
      })
      next()
    } catch (e) {
      next(e)
    }
  }
}
