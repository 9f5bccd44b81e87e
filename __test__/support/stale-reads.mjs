// The read cache's cross-process rule, as read-cache.test.mjs and
// tls.test.mjs run it: `writer` sets a session, tells a reader in another
// process (cache-reader.mjs) through a pipe, and the reader reads at once.
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { newId, session } from './setup.mjs'

/**
 * Runs `rounds` rounds; resolves how many reads found an older version, and
 * the reader's `stats().readCache` at the end.
 * @param {any} writer a store with readCache: true
 * @param {{ url: string, busy: 'idle' | 'busy', rounds: number, options?: object }} how
 */
export async function staleReads(writer, { url, busy, rounds, options }) {
  const args = [url, busy, ...(options ? [JSON.stringify(options)] : [])]
  const reader = fork(fileURLToPath(new URL('./cache-reader.mjs', import.meta.url)), args)
  /** @type {((m: any) => void) | null} */
  let waiting = null
  reader.on('message', (m) => waiting?.(m))
  const next = () => new Promise((resolve) => (waiting = resolve))
  try {
    if ((await next()) !== 'ready') throw new Error('the reader did not start')
    const id = newId()
    let stale = 0
    for (let version = 0; version < rounds; version++) {
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
    return { stale, stats }
  } finally {
    reader.kill()
  }
}
