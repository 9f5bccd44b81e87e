// The users' index under concurrency (README, "Log out everywhere"): 4 stores
// log users in, rotate ids, merge fields, switch and remove users, replace
// `data`, touch, delete, and let short sessions expire, all at once. After
// each round, what the calls see is checked against every session key on the
// server: userSessions(u) is exactly the live sessions holding u (no session
// missing, no dead id), and destroyUserSessions(u) leaves none of u's.
// USERS_FUZZ_ROUNDS and USERS_FUZZ_SEED change the run.
import assert from 'node:assert/strict'
import { it } from 'node:test'
import { newId, onCluster, useRedis } from './support/setup.mjs'
import { seeded } from './support/random.mjs'

const ROUNDS = Number(process.env.USERS_FUZZ_ROUNDS ?? 40)
const SEED = Number(process.env.USERS_FUZZ_SEED ?? 0x10905)
const OPS = 120
const USERS = ['ada', 'bob', 'cy', 42, 'dé 😀', 'e"q']
const TTLS = [150, 400, 60_000, 60_000, 60_000]

const redis = useRedis()
const masters = () => (redis.cluster ? redis.admin.nodes('master') : [redis.admin])

const { int, pick } = seeded(SEED)

const sessionOf = (id, user) => ({
  data: { ...(user === undefined ? {} : { userId: user }), cart: [int(100)] },
  meta: { id, createdAt: 1763812345678, expiresAt: 1763812345678 + 86400000 },
})

/** Every live session on the server, by the user it holds (as String). */
async function truth() {
  const byUser = new Map()
  for (const node of masters()) {
    const keys = (await node.keys('ufz:*')).filter((k) => !k.startsWith('ufz:lock:') && !k.startsWith('ufz:user:'))
    const texts = keys.length ? await Promise.all(keys.map((k) => node.get(k))) : []
    keys.forEach((k, i) => {
      if (texts[i] === null) return
      const user = JSON.parse(texts[i]).data?.userId
      if (user === undefined) return
      const ids = byUser.get(String(user)) ?? new Set()
      ids.add(k.slice('ufz:'.length))
      byUser.set(String(user), ids)
    })
  }
  return byUser
}

it(`users' index: ${ROUNDS} rounds of ${OPS} concurrent ops from 4 stores${onCluster ? ' (cluster)' : ''}`, async (t) => {
  await redis.ready()
  const stores = Array.from({ length: 4 }, () => redis.store({ prefix: 'ufz:', userIdPath: 'data.userId' }))
  /** Ids this run wrote, to draw from (some expired or ended since). */
  const ids = []
  let ended = 0
  let checked = 0
  for (let round = 0; round < ROUNDS; round++) {
    const calls = []
    for (let i = 0; i < OPS; i++) {
      const store = pick(stores)
      const known = ids.length > 0 && int(5) > 0
      const id = known ? pick(ids) : newId()
      const ttl = pick(TTLS)
      const r = int(100)
      if (!known || r < 15) {
        // A login: a new session naming a user.
        const fresh = known ? newId() : id
        ids.push(fresh)
        calls.push(store.set(fresh, sessionOf(fresh, pick(USERS)), ttl))
      } else if (r < 30) {
        // Rotation: the full copy under a new id, the old id a redirect.
        const fresh = newId()
        ids.push(fresh)
        const user = pick(USERS)
        calls.push(store.set(fresh, sessionOf(fresh, user), ttl).then(() => store.merge(id, { data: null, meta: { redirectTo: fresh } }, 5000)))
      } else if (r < 45) calls.push(store.merge(id, { 'data.cart': [int(9)] }, ttl))
      else if (r < 55) calls.push(store.merge(id, { 'data.userId': pick(USERS) }, ttl))
      else if (r < 65) calls.push(store.merge(id, { 'data.userId': undefined }, ttl))
      else if (r < 72) calls.push(store.merge(id, { data: { userId: pick(USERS), cart: [] } }, ttl))
      else if (r < 85) calls.push(store.touch(id, ttl))
      else if (r < 92) calls.push(store.delete(id))
      else calls.push(store.destroyUserSessions(pick(USERS)).then((n) => (ended += n)))
    }
    await Promise.all(calls)
    // Now and then, long enough for the short sessions to expire.
    if (round % 4 === 3) await new Promise((resolve) => setTimeout(resolve, 200))
    // What the calls see, against the server's keys read before and after
    // (short sessions may expire in between): every session live before and
    // after is listed (no session missing), and every listed one was live
    // before (no dead id).
    const live = await truth()
    const seen = new Map()
    for (const user of USERS) seen.set(user, await pick(stores).userSessions(user))
    const still = await truth()
    for (const user of USERS) {
      const listed = new Set(seen.get(user))
      for (const id of still.get(String(user)) ?? []) {
        if ((live.get(String(user)) ?? new Set()).has(id)) {
          assert.ok(listed.has(id), `round ${round}: userSessions(${JSON.stringify(user)}) misses a live session`)
        }
      }
      for (const id of listed) {
        assert.ok(live.get(String(user))?.has(id), `round ${round}: userSessions(${JSON.stringify(user)}) lists a session that was not live`)
      }
      checked += listed.size
    }
    const victim = pick(USERS)
    const keep = pick([...(still.get(String(victim)) ?? [undefined])])
    ended += await pick(stores).destroyUserSessions(victim, keep === undefined ? undefined : { except: keep })
    const after = [...((await truth()).get(String(victim)) ?? [])]
    assert.ok(after.every((id) => id === keep), `round ${round}: ${JSON.stringify(victim)} keeps only the current session`)
    if (ids.length > 2000) ids.splice(0, 1000)
  }
  t.diagnostic(`${ROUNDS} rounds: ${checked} live sessions checked in the lists, ${ended} sessions ended`)
})
