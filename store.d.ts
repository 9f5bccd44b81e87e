// Types of the public API (store.js). The native half's types are generated
// into index.d.ts from the Rust sources, StoreOptions among them.
import type {
  StoreOptions as NativeOptions,
  TlsOptions as NativeTlsOptions,
  ClusterOptions,
  SentinelOptions,
  StoreStats,
  OpCounts,
  CodeCounts,
  GetCounts,
  MergeCounts,
  LockCounts,
  Latency,
  OpLatencies,
  UserCounts,
  ErrorCode as NativeErrorCode,
} from './index'

export type { ClusterOptions, SentinelOptions, StoreStats, OpCounts, CodeCounts, GetCounts, MergeCounts, LockCounts, Latency, OpLatencies, UserCounts }

/** Where a store stands (`store.status`). */
export type StoreStatus = 'connecting' | 'ready' | 'reconnecting' | 'closed'

/** The ops the tracing channel and the stats name (the ops of src/store/ops.rs, and the admin calls). */
export type CallOp = keyof OpCounts | 'ping' | 'length' | 'clear' | 'userSessions' | 'destroyUserSessions'

/**
 * The context of an event of the `relay-session-redis:call` TracingChannel
 * (start, end, asyncStart, asyncEnd, error). Never the session id, session
 * data or credentials.
 */
export interface CallContext {
  op: CallOp
  /** The store's key prefix. */
  prefix: string
  /** The server's host (on a cluster, the first seed node's); '' with Sentinel before the first connection. */
  serverAddress: string
  serverPort: number | undefined
  /** How many calls crossed into Rust with this one (0 for admin calls). */
  batchSize: number
  /** On failure: the error's code. */
  errorCode?: ErrorCode
  /** On failure: the error (set by node:diagnostics_channel). */
  error?: unknown
  /** On success: the call's value (set by node:diagnostics_channel). */
  result?: unknown
}

/** One check of the doctor. */
export interface DoctorCheck {
  /** 'server', 'memory', 'persistence', 'replication', 'acl', 'latency', 'cluster', 'scripts', 'readCache', 'sessions', 'users' (with userIdPath). */
  name: string
  /** ok (✓), warn (⚠) or fail (✗). */
  level: 'ok' | 'warn' | 'fail'
  /** Why, and what to change. */
  message: string
}

export interface DoctorReport {
  /** No check failed. */
  ok: boolean
  checks: DoctorCheck[]
}

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

/** The stable codes of RedisSessionStoreError (defined in src/errors.rs). */
export type ErrorCode = NativeErrorCode

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
  /** Sets an existing session's time to live (`PEXPIRE`); creates nothing. `true` when it existed. */
  touch(sessionId: string, ttlMs: number): Promise<boolean>
  /** Counts since the store was created. */
  stats(): StoreStats
  /** 'connecting' until the first call or ping() opens the connection. */
  readonly status: StoreStatus
  /** One PING (on a cluster, every master), bounded like every call; the round trip in ms. */
  ping(): Promise<number>
  /** The session ids under the prefix, a SCAN page of `count` keys (default 1000) at a time, on every master. */
  ids(options?: { count?: number }): AsyncGenerator<string, void, undefined>
  /** How many sessions are under the prefix (SCAN on every master). */
  length(): Promise<number>
  /** Removes every session and lock under the prefix, a page at a time; how many keys it removed. */
  clear(): Promise<number>
  /**
   * The ids of a user's live sessions: those that exist and hold `userId` at
   * `userIdPath` now (README, "Log out everywhere"). Needs `userIdPath`.
   */
  userSessions(userId: string | number): Promise<string[]>
  /**
   * Ends every live session of a user but `options.except`; how many it
   * ended. Each is deleted only if unchanged since it was found to hold the
   * user. Needs `userIdPath`.
   */
  destroyUserSessions(userId: string | number, options?: { except?: string }): Promise<number>
  /** Checks the server's settings for sessions. */
  doctor(): Promise<DoctorReport>
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
  /** The largest `count` of one `ids()` page: 10,000. */
  MAX_SCAN_COUNT: number
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
