// A store round trip, runtime-neutral: run by scripts/runtimes.mjs under Bun
// and Deno (and Node), and by scripts/platforms.mjs with each platform's
// binary, under emulation where the CPU is foreign. Loads the package from
// STORE_PATH (its store.js) or argv[2], talks to REDIS_URL, and checks what it
// reads: the contract's round trip (set, get, delete), a merge of several
// paths that leaves the others as they were, a lock held, refused and
// released, and the counters of stats(); a get answered by the read cache
// (which polls its socket through libc); and, given REDIS_TLS_URL and
// REDIS_TLS_CA (a PEM file), the round trip over TLS (rustls with ring's
// assembly for the CPU). Prints one line of JSON: `ok`, the
// runtime's CPU, the .node the process mapped, and the failures; exits 1 on
// any failure. `merges` says how the merge was written: by the server's own
// compare-and-set (`native`, Redis 8.4+: the digest computed here must match
// the server's) or by swap.lua.
import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const t0 = Date.now()
const { createRedisSessionStore } = require(process.argv[2] ?? process.env.STORE_PATH)
const loadMs = Date.now() - t0
const store = createRedisSessionStore({ url: process.env.REDIS_URL })
const failures = []
const expect = (what, got, want) => {
  if (JSON.stringify(got) !== JSON.stringify(want)) failures.push(`${what}: got ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`)
}

const id = 'smoke'.repeat(8)
const meta = { id, createdAt: 1, expiresAt: 2 }
try {
  await store.set(id, { data: { n: 1, list: [1, 'two'], user: { name: 'ada', roles: ['a'] }, text: 'é ✓ 😀' }, meta }, 60000)
  await store.merge(id, { 'data.n': 2, 'data.user.roles': ['a', 'b'], 'data.cart': { items: 3 } }, 60000)
  expect('get after merge', await store.get(id), {
    data: { n: 2, list: [1, 'two'], user: { name: 'ada', roles: ['a', 'b'] }, text: 'é ✓ 😀', cart: { items: 3 } },
    meta,
  })
  expect('lock', await store.lock(id, 5000), true)
  expect('lock while held', await store.lock(id, 5000), false)
  expect('isLocked', await store.isLocked(id), true)
  await store.unlock(id)
  expect('isLocked after unlock', await store.isLocked(id), false)
  await store.delete(id)
  expect('get after delete', await store.get(id), null)
  const stats = store.stats()
  expect('stats', {
    calls: [stats.calls.set, stats.calls.merge, stats.calls.get, stats.calls.lock, stats.calls.unlock, stats.calls.delete],
    errors: Object.values(stats.errors).reduce((a, b) => a + b, 0),
    gets: stats.gets,
    locks: [stats.locks.taken, stats.locks.refused, stats.locks.released],
    latencyCounted: stats.latency.merge.count,
  }, {
    calls: [1, 1, 2, 2, 1, 1],
    errors: 0,
    gets: { hits: 1, misses: 1 },
    locks: [1, 1, 1],
    latencyCounted: 1,
  })
  await readCacheHit()
  if (process.env.REDIS_TLS_URL) await overTls()
} catch (err) {
  failures.push(`threw ${err?.code ?? ''} ${err?.message ?? err}`)
} finally {
  await store.close()
}

/** A get answered from memory by a store with the read cache, once tracking is on. */
async function readCacheHit() {
  const cached = createRedisSessionStore({ url: process.env.REDIS_URL, readCache: true })
  try {
    await cached.set(id, { data: { cached: true }, meta }, 60000)
    for (let i = 0; i < 50 && cached.stats().readCache.hits === 0; i++) {
      await cached.get(id)
      if (cached.stats().readCache.hits === 0) await sleep(100)
    }
    const { tracking, hits } = cached.stats().readCache
    expect('read cache', { tracking, hit: hits > 0, got: await cached.get(id) }, { tracking: 'on', hit: true, got: { data: { cached: true }, meta } })
    await cached.delete(id)
  } finally {
    await cached.close()
  }
}

/** The round trip over TLS, trusting the given CA only. */
async function overTls() {
  const tls = createRedisSessionStore({ url: process.env.REDIS_TLS_URL, tls: { ca: readFileSync(String(process.env.REDIS_TLS_CA), 'utf8') } })
  try {
    await tls.set(id, { data: { tls: 1 }, meta }, 60000)
    await tls.merge(id, { 'data.tls': 2 }, 60000)
    expect('get over TLS', await tls.get(id), { data: { tls: 2 }, meta })
    await tls.delete(id)
  } finally {
    await tls.close()
  }
}
const { native, remembered, readThenSwap, conflicts } = store.stats().merges
let binary = null
try {
  binary = readFileSync('/proc/self/maps', 'utf8').split('\n').find((l) => l.endsWith('.node'))?.split('/').at(-1) ?? null
} catch {}
console.log(JSON.stringify({ ok: failures.length === 0, arch: process.arch, binary, tls: Boolean(process.env.REDIS_TLS_URL), merges: { native, remembered, readThenSwap, conflicts }, loadMs, ms: Date.now() - t0, failures }))
process.exitCode = failures.length === 0 ? 0 : 1
