// The read cache's cross-process rule, as read-cache.test.mjs and
// tls.test.mjs run it: `writer` sets a session, tells a reader in another
// process (cache-reader.mjs) through a pipe, and the reader reads at once.
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { newId, session } from './setup.mjs'

/**
 * Runs `rounds` rounds (and on, while `until` has not settled), over
 * `sessions` sessions in turn (1 unless said); resolves how many reads found
 * an older version, the rounds run, and the reader's `stats().readCache` at
 * the end. An empty `url`: the store's address is in `options` (a cluster).
 * @param {any} writer a store with readCache: true
 * @param {{ url: string, busy: 'idle' | 'busy', rounds: number, options?: object, sessions?: number, until?: Promise<unknown> }} how
 */
export async function staleReads(writer, { url, busy, rounds, options, sessions = 1, until }) {
  let settled = !until
  until?.finally(() => (settled = true)).catch(() => {})
  const args = [url, busy, ...(options ? [JSON.stringify(options)] : [])]
  const reader = fork(fileURLToPath(new URL('./cache-reader.mjs', import.meta.url)), args)
  /** @type {((m: any) => void) | null} */
  let waiting = null
  reader.on('message', (m) => waiting?.(m))
  const next = () => new Promise((resolve) => (waiting = resolve))
  try {
    if ((await next()) !== 'ready') throw new Error('the reader did not start')
    const ids = Array.from({ length: sessions }, () => newId())
    let stale = 0
    let version = 0
    for (; version < rounds || !settled; version++) {
      const id = ids[version % sessions]
      // The write resolves here, then the reader is told (a pipe), then it reads.
      await writer.set(id, session(id, { version }), 60_000)
      reader.send({ id, version })
      const m = await next()
      if (m.error) throw new Error(m.error)
      if (m.version !== version) {
        stale++
        if (process.env.CACHE_DEBUG) console.log('stale', version, m.version, m.hit ? 'hit' : 'miss')
      }
    }
    reader.send('stop')
    const { stats } = await next()
    return { stale, rounds: version, stats }
  } finally {
    reader.kill()
  }
}
