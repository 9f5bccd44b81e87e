// What users' indexes (userIdPath) cost Redis per write, and what they hold:
// the same writes (sets of new sessions, then merges of a field) by a store
// with and without userIdPath, each on a fresh Redis; Redis's time per write
// from INFO commandstats, the commands per write, and the memory of the
// indexes (used_memory with and without).
//   node bench/users-cost.mjs        (USERS_COST_SESSIONS, default 20000; 4 sessions a user)
import { createRequire } from 'node:module'
import { Redis } from 'ioredis'
import { startRedis } from '../harness/redis-server.mjs'

const require = createRequire(import.meta.url)
const { createRedisSessionStore } = require('../store.js')

const SESSIONS = Number(process.env.USERS_COST_SESSIONS ?? 20_000)
const PER_USER = 4
const TTL = 600_000
const INFLIGHT = 64
const id = (i) => i.toString(16).padStart(64, '0')
const sessionOf = (i) => ({
  data: { userId: 10_000 + Math.floor(i / PER_USER), cart: [], note: 'x'.repeat(900) },
  meta: { id: id(i), createdAt: 1763812345678, expiresAt: 1763812345678 + 86400000 },
})

/** Redis's commandstats as { command: {calls, usec} }. */
async function commandstats(admin) {
  const out = {}
  for (const line of (await admin.info('commandstats')).split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line.trim())
    if (m) out[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) }
  }
  return out
}

async function run(userIdPath) {
  const server = await startRedis()
  const admin = new Redis({ port: server.port, host: '127.0.0.1' })
  try {
    const store = createRedisSessionStore({ url: server.url, ...(userIdPath ? { userIdPath } : {}) })
    await store.set(id(SESSIONS + 1), sessionOf(0), 1000) // scripts loaded, link open
    await store.merge(id(SESSIONS + 1), { 'data.cart': [1] }, 1000)
    const used0 = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))[1])
    const phases = {}
    for (const phase of ['set', 'merge']) {
      await admin.config('RESETSTAT')
      const t0 = performance.now()
      for (let i = 0; i < SESSIONS; i += INFLIGHT) {
        const batch = []
        for (let j = i; j < Math.min(SESSIONS, i + INFLIGHT); j++) {
          batch.push(phase === 'set' ? store.set(id(j), sessionOf(j), TTL) : store.merge(id(j), { 'data.cart': [j] }, TTL))
        }
        await Promise.all(batch)
      }
      const ms = performance.now() - t0
      const stats = await commandstats(admin)
      delete stats.config
      delete stats.info
      const usec = Object.values(stats).reduce((a, s) => a + s.usec, 0)
      const calls = Object.values(stats).reduce((a, s) => a + s.calls, 0)
      phases[phase] = { perSecond: SESSIONS / (ms / 1000), usecPerWrite: usec / SESSIONS, commandsPerWrite: calls / SESSIONS, stats }
    }
    const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))[1]) - used0
    await store.close()
    return { phases, used }
  } finally {
    admin.disconnect()
    await server.stop()
  }
}

const off = await run(null)
const on = await run('data.userId')
console.log(`${SESSIONS.toLocaleString('en-US')} sessions of about 1 KB, ${PER_USER} a user, ${INFLIGHT} writes in flight, one store, a fresh Redis each:`)
console.log('| | writes/s off | on | Redis µs per write off | on | commands per write off | on |')
console.log('|---|---|---|---|---|---|---|')
for (const phase of ['set', 'merge']) {
  const [a, b] = [off.phases[phase], on.phases[phase]]
  console.log(
    `| ${phase} | ${a.perSecond.toFixed(0)} | ${b.perSecond.toFixed(0)} (${(b.perSecond / a.perSecond).toFixed(2)}×) | ${a.usecPerWrite.toFixed(2)} | ${b.usecPerWrite.toFixed(2)} | ${a.commandsPerWrite.toFixed(2)} | ${b.commandsPerWrite.toFixed(2)} |`,
  )
}
for (const phase of ['set', 'merge']) {
  const per = (s) =>
    Object.entries(s)
      .map(([k, v]) => `${k} ${(v.calls / SESSIONS).toFixed(2)}×${(v.usec / Math.max(1, v.calls)).toFixed(2)} µs`)
      .join(', ')
  console.log(`${phase}, with userIdPath: ${per(on.phases[phase].stats)}`)
}
const users = SESSIONS / PER_USER
console.log(
  `memory: ${(off.used / 1e6).toFixed(1)} MB without, ${(on.used / 1e6).toFixed(1)} MB with: ${((on.used - off.used) / users).toFixed(0)} B per user's index of ${PER_USER} (${((on.used - off.used) / SESSIONS).toFixed(0)} B per session)`,
)
