// A type test of store.d.ts, checked by `tsc --noEmit` (npm run lint): the
// store as an app types it, against relay-session's SessionStoreAdapter
// written from its contract.
import diagnosticsChannel from 'node:diagnostics_channel'
import {
  createRedisSessionStore,
  limits,
  RedisSessionStoreError,
  type CallContext,
  type DoctorReport,
  type ErrorCode,
  type RedisSessionStore,
  type SessionStoreData,
  type StoreStats,
  type StoreStatus,
} from '../store.js'

/** relay-session's store interface, from its contract. */
interface SessionStoreAdapter {
  get(sessionId: string): Promise<SessionStoreData | null>
  set(sessionId: string, data: SessionStoreData, ttlMs: number): Promise<void>
  delete(sessionId: string): Promise<void>
  merge(sessionId: string, paths: Record<string, unknown>, ttlMs: number): Promise<void>
  lock(sessionId: string, ttlMs: number): Promise<boolean>
  unlock(sessionId: string): Promise<void>
  isLocked(sessionId: string): Promise<boolean>
}

export async function typed(): Promise<void> {
  const store: SessionStoreAdapter = createRedisSessionStore({ url: 'redis://127.0.0.1:6379', prefix: 'sess:' })
  const full: RedisSessionStore = createRedisSessionStore({ cluster: { nodes: ['redis://127.0.0.1:7000'] }, tls: { ca: Buffer.from('') } })
  const session = await store.get('id')
  if (session !== null && session.data !== null) session.meta.expiresAt.toFixed()
  await store.merge('id', { 'data.user.name': 'Ada', 'data.cart': undefined }, 60_000)
  const stats: StoreStats = full.stats()
  const p99: number = stats.latency.get.p99Ms + stats.errorCodes.ERR_TIMEOUT + stats.merges.readThenSwap
  const status: StoreStatus = full.status
  const rtt: number = await full.ping()
  for await (const id of full.ids({ count: 100 })) id.toUpperCase()
  const n: number = (await full.length()) + (await full.clear()) + limits.MAX_SCAN_COUNT
  const touched: boolean = await full.touch('id', 1000)
  const report: DoctorReport = await full.doctor()
  report.checks.filter((c) => c.level === 'fail').map((c) => c.message)
  diagnosticsChannel.tracingChannel<unknown, CallContext>('relay-session-redis:call').subscribe({
    start: (c) => c.op.length + c.batchSize,
    end: () => {},
    asyncStart: () => {},
    asyncEnd: () => {},
    error: (c) => {
      const code: ErrorCode | undefined = c.errorCode
      return code
    },
  })
  try {
    await full.close()
  } catch (e) {
    if (e instanceof RedisSessionStoreError) {
      const code: ErrorCode = e.code
      void code
    }
  }
  void [p99, status, rtt, n, touched]
  // @ts-expect-error: ttlMs is required
  await store.set('id', { data: null, meta: { redirectTo: 'x' } })
  // @ts-expect-error: no such option
  createRedisSessionStore({ hostname: 'x' })
}
