// Types of the public API (store.js). The native half's types are generated
// into index.d.ts from the Rust sources, StoreOptions among them.
import type { StoreOptions as NativeOptions, TlsOptions as NativeTlsOptions, ClusterOptions, SentinelOptions } from './index'

export type { ClusterOptions, SentinelOptions }

/** PEM text, as a string or a Buffer. */
export type TlsOptions = { [K in keyof NativeTlsOptions]?: string | Buffer }

/** Options of createRedisSessionStore (documented in index.d.ts and the README). */
export type StoreOptions = Omit<NativeOptions, 'tls'> & { tls?: TlsOptions }

/** What relay-session stores: a live session, or a rotated-away id. */
export type SessionStoreData =
  | {
      data: Record<string, unknown>
      meta: { id: string; createdAt: number; expiresAt: number; redirectTo?: string }
    }
  | { data: null; meta: { redirectTo: string } }

/** The stable codes of RedisSessionStoreError. */
export type ErrorCode =
  | 'ERR_INVALID_ARG'
  | 'ERR_CONNECTION'
  | 'ERR_TIMEOUT'
  | 'ERR_CORRUPT_SESSION'
  | 'ERR_CLOSED'
  | 'ERR_AUTH'
  | 'ERR_REDIS'

export declare class RedisSessionStoreError extends Error {
  readonly name: 'RedisSessionStoreError'
  readonly code: ErrorCode
}

/** relay-session's SessionStoreAdapter, plus close(). */
export interface RedisSessionStore {
  get(sessionId: string): Promise<SessionStoreData | null>
  set(sessionId: string, data: SessionStoreData, ttlMs: number): Promise<void>
  /** Removes the session and its lock. */
  delete(sessionId: string): Promise<void>
  /**
   * Applies dirty dot-paths (`{'data.user.name': 'Pascal'}`) atomically;
   * `undefined` removes a path. Untouched bytes of the stored JSON stay as they
   * were. Does nothing when the session does not exist.
   */
  merge(sessionId: string, paths: Record<string, unknown>, ttlMs: number): Promise<void>
  /** Takes the lock atomically; `true` when this call got it. */
  lock(sessionId: string, ttlMs: number): Promise<boolean>
  /** Releases the lock if this store still holds it. */
  unlock(sessionId: string): Promise<void>
  isLocked(sessionId: string): Promise<boolean>
  /** Waits for calls in flight, then closes the connection; later calls reject with ERR_CLOSED. */
  close(): Promise<void>
}

/** The parts of an ioredis client the migration form reads. */
export interface IoredisLike {
  options: {
    host?: string
    port?: number
    username?: string
    password?: string
    db?: number
    tls?: object
    keyPrefix?: string
  }
  sendCommand(...args: any[]): unknown
}

/**
 * What one call may ask (src/limits.rs); a call over a limit rejects with
 * ERR_INVALID_ARG before anything is sent.
 */
export declare const limits: Readonly<{
  /** Paths in one merge: 10,000. */
  MAX_MERGE_PATHS: number
  /** Dot-separated segments in one merge path: 1,000. */
  MAX_PATH_SEGMENTS: number
  /** The largest ttlMs: Number.MAX_SAFE_INTEGER. */
  MAX_TTL_MS: number
  /** The most nulls one merge path may pad an array with: 100,000. */
  MAX_PADDING: number
}>

/** Creates a store with its own connection. */
export declare function createRedisSessionStore(options?: StoreOptions): RedisSessionStore
/**
 * Migration aid: a store connected to the server an ioredis client is set up
 * for (host, port, username, password, db, tls). The client itself is not used.
 */
export declare function createRedisSessionStore(
  redis: IoredisLike,
  options?: Omit<StoreOptions, 'url'>,
): RedisSessionStore
