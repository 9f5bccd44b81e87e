// @ts-check
'use strict'

// The doctor: checks a server's settings for sessions, connected as the store
// is (its own connection, user and prefix). Each check gives a level and one
// sentence of why and what to change. Used by `store.doctor()` and by the
// `relay-session-redis doctor` command (cli.js).

/** @typedef {import('./store').DoctorCheck} DoctorCheck */
/** @typedef {import('./store').DoctorReport} DoctorReport */
/** @typedef {import('./index').AddonStore} AddonStore */

/**
 * PINGs the latency check sends, once the connection is open: ROUNDS rounds
 * of PINGS / ROUNDS at once.
 */
const PINGS = 100
const ROUNDS = 4
/** How long the session count may walk the keys, in ms. */
const COUNT_BUDGET_MS = 5000
/** Keys the session count walks in one round trip: the most one SCAN may ask. */
const PAGE = 10_000
/** Sessions whose memory is sampled. */
const SAMPLES = 5
/** Used memory, as a share of maxmemory, from which noeviction is a problem. */
const FULL = 0.9

/** @param {number} bytes */
function size(bytes) {
  if (bytes >= 1 << 30) return `${(bytes / (1 << 30)).toFixed(1)} GiB`
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(1)} MiB`
  if (bytes >= 1 << 10) return `${(bytes / (1 << 10)).toFixed(1)} KiB`
  return `${bytes} B`
}

/** `INFO`'s text as fields. @param {string} text */
function parseInfo(text) {
  /** @type {Record<string, string>} */
  const fields = {}
  for (const line of text.split(/\r?\n/)) {
    const at = line.indexOf(':')
    if (at > 0 && !line.startsWith('#')) fields[line.slice(0, at)] = line.slice(at + 1)
  }
  return fields
}

/**
 * What a terminal acts on rather than shows: control characters (C0, DEL,
 * C1, so escape sequences too), line and paragraph separators and the
 * bidirectional overrides.
 */
// oxlint-disable-next-line no-control-regex -- the characters to escape
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g

/**
 * Text with every character a terminal would act on written as `\uXXXX`:
 * what the server says (its version, its errors) is shown, never obeyed.
 * @param {string} text
 */
const escapeControls = (text) => text.replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)

/** @param {unknown} reply */
const isError = (reply) => typeof reply === 'object' && reply !== null && 'error' in reply

/** @param {unknown} reply */
const errorText = (reply) => (isError(reply) ? String(/** @type {any} */ (reply).message) : '')

/**
 * A reply sent to every master, as [address, reply] pairs: one error reply
 * for all of them when the command failed as a whole.
 * @param {unknown} reply
 * @returns {[string, unknown][]}
 */
const perNode = (reply) => (isError(reply) ? [['', reply]] : Object.entries(/** @type {object} */ (reply)))

/** @param {'ok' | 'warn' | 'fail'} level @param {string} name @param {string} message @returns {DoctorCheck} */
const check = (level, name, message) => ({ name, level, message: escapeControls(message) })

/** @param {unknown} e */
const isTimeout = (e) => /** @type {any} */ (e)?.code === 'ERR_TIMEOUT'

/**
 * A promise's value or its failure, whichever comes.
 * @template T
 * @param {Promise<T>} p
 * @returns {Promise<{value: T, error?: undefined} | {value?: undefined, error: unknown}>}
 */
const settle = (p) => p.then((value) => ({ value }), (error) => ({ error }))

/**
 * Runs every check against the server `addon` connects to. The checks ask
 * their questions at once, so the doctor takes a bounded number of round
 * trips whatever the latency (the README's Doctor says how many).
 * @param {AddonStore} addon
 * @returns {Promise<DoctorReport>}
 */
async function examine(addon) {
  const facts = await ask(addon)
  const { answers } = facts
  /** @type {DoctorCheck[]} */
  const checks = [
    attempt('server', () => serverCheck(facts)),
    attempt('memory', () => perMaster(facts, 'memory', null, memoryCheck)),
    attempt('persistence', () => perMaster(facts, 'persistence', answers.save, persistenceCheck)),
    attempt('replication', () => perMaster(facts, 'replication', answers.minReplicas, replicationCheck)),
    attempt('acl', () => aclCheck(answer(answers.access))),
    attempt('latency', () => latencyCheck(answers.times, addon.callBoundMs)),
  ]
  if (answers.clusterInfo) checks.push(attempt('cluster', () => clusterCheck(facts)))
  checks.push(attempt('scripts', () => scriptsCheck(facts)))
  checks.push(attempt('readCache', () => readCacheCheck(addon, facts, answers.trackingMax)))
  checks.push(attempt('sessions', () => sessionsCheck(addon, answer(answers.sessions), facts.infos)))
  if (addon.userPrefix != null) checks.push(attempt('users', () => usersCheck(addon, answer(answers.sessions), facts.infos)))
  return { ok: checks.every((c) => c.level !== 'fail'), checks }
}

/**
 * Asks every question at once: the round trips of the slowest check, not of
 * all. The first PING opens the connection; the latency is measured after
 * it. Rejects when the server cannot be checked at all.
 * @param {AddonStore} addon
 */
async function ask(addon) {
  /** @param {string} to @param {string[]} args */
  const query = async (to, ...args) => JSON.parse(await addon.query(to, args))
  const masters = await addon.masters()
  const cluster = masters[0] !== ''
  /** PINGs in rounds, each round at once; a PING's failure is the round's. */
  const pings = async () => {
    const times = []
    for (let r = 0; r < ROUNDS; r++) times.push(...(await Promise.all(Array.from({ length: PINGS / ROUNDS }, () => addon.ping()))))
    return times
  }
  const opened = settle(addon.ping())
  const [ping, info, save, minReplicas, compares, access, times, clusterInfo, scripts, sessions, trackingMax] = await Promise.all([
    opened,
    settle(query('*', 'INFO')),
    settle(query('*', 'CONFIG', 'GET', 'save')),
    settle(query('*', 'CONFIG', 'GET', 'min-replicas-to-write')),
    settle(addon.compareCommands()),
    settle(addon.commandAccess()),
    // On a slow link the opening PING may time out while the connection
    // opens: one more PING (not counted) waits for it.
    settle(opened.then((first) => (first.error ? settle(addon.ping()) : null)).then(pings)),
    cluster ? settle(query('*', 'CLUSTER', 'INFO')) : null,
    settle(query('*', 'SCRIPT', 'EXISTS', ...addon.scriptShas)),
    settle(countSessions(addon, masters, query)),
    settle(query('*', 'CONFIG', 'GET', 'tracking-table-max-keys')),
  ])
  // A server that cannot be reached, or that refuses the credentials
  // (NOAUTH, WRONGPASS) or the connection itself, cannot be checked at all:
  // every answer above is that refusal.
  if (ping.error && !isTimeout(ping.error)) throw ping.error

  // Every master's INFO, by address ('' on a single server).
  /** @type {[string, Record<string, string>][]} */
  const infos = []
  let infoRefused = ''
  if (info.error) {
    // The first call may not be answered in time on a slow link (the
    // latency check says so).
    infoRefused = String(/** @type {any} */ (info.error)?.message ?? info.error)
  } else {
    for (const [node, reply] of perNode(info.value)) {
      if (isError(reply)) infoRefused = String(/** @type {any} */ (reply).error)
      else infos.push([node, parseInfo(String(reply))])
    }
  }
  return {
    masters,
    cluster,
    infos,
    infoRefused,
    answers: { save, minReplicas, compares, access, times, clusterInfo, scripts, sessions, trackingMax },
  }
}

/** @typedef {Awaited<ReturnType<typeof ask>>} Facts */

/**
 * The read cache (readCache): whether it answers gets here, and what its
 * tracking takes of the server (INFO's tracking_total_keys against
 * tracking-table-max-keys).
 * @param {AddonStore} addon @param {Facts} facts @param {{value?: any, error?: unknown}} max
 */
function readCacheCheck(addon, facts, max) {
  const state = addon.stats().readCache.tracking
  const info = facts.infos[0]?.[1] ?? {}
  const tracked = info.tracking_total_keys ?? '?'
  const values = max.error ? [] : perNode(max.value).flatMap(([, r]) => (Array.isArray(r) ? r : r && typeof r === 'object' ? Object.values(r) : [r]))
  const limit = values.map(String).find((v) => /^\d+$/.test(v))
  const table = `${tracked} keys tracked for client-side caching${limit ? ` (tracking-table-max-keys ${limit === '0' ? 'unlimited' : limit}; beyond it the server reports keys to make room)` : ''}`
  if (state === 'off') return check('ok', 'readCache', `off: every get goes to Redis (readCache: true answers gets of held sessions from memory; README, "Read cache"). ${table}.`)
  if (state === 'refused') return check('warn', 'readCache', 'readCache: true, but the server refused CLIENT TRACKING (or CLIENT ID): every get goes to Redis. Grant +client|tracking +client|id (Redis 6.0+).')
  if (state === 'evicting') {
    return check('warn', 'readCache', `readCache: true, but the server may evict keys (maxmemory-policy ${info.maxmemory_policy ?? 'unknown'}): the cache stands aside, as an eviction the store's own write causes is not reported to it. maxmemory-policy noeviction (or no maxmemory) lets it answer gets.`)
  }
  if (state === 'unsupported') {
    return check('warn', 'readCache', `readCache: true, but this Redis (before 6.2) sends the report of a script's own write inside the reply of the transaction around it, which the store cannot read: the cache stands aside and every get goes to Redis. Redis 6.2 or later (or Valkey) lets it answer gets.`)
  }
  if (state === 'crowded') {
    return check('warn', 'readCache', `readCache: true, but the server's tracking table holds more than half its limit, or INFO is refused: the cache stands aside, as a key the server drops from a full table while running the store's own command is not reported to it. ${table}. Raise tracking-table-max-keys (0: no limit), or grant +info.`)
  }
  return check('ok', 'readCache', `on (tracking ${state}): gets of held sessions are answered from memory; what no server reports (SWAPDB, an eviction or a table drop during the store's own command, a maxmemory set at run time) is looked for every 0.5 s. ${table}.`)
}

/** A check's answer, or the failure a check reports as a warning. @param {{value?: any, error?: unknown}} r */
function answer(r) {
  if (r.error) throw r.error
  return r.value
}

/**
 * One check; an answer it reads that failed (a refused command, a timeout)
 * makes it a warning that says so, and the other checks still run.
 * @param {string} name
 * @param {() => DoctorCheck} run
 */
function attempt(name, run) {
  try {
    return run()
  } catch (e) {
    return check('warn', name, `could not check: ${/** @type {Error} */ (e)?.message ?? String(e)}.`)
  }
}

/** `host:port: ` before a master's line on a cluster. @param {Facts} facts @param {string} node */
const where = (facts, node) => (facts.cluster ? `${node}: ` : '')

/** Whether merges and unlocks use the server's own commands. @param {Facts} facts */
const serverCompares = (facts) => facts.answers.compares.value !== undefined && facts.answers.compares.value.compareAndSet !== 'swap.lua'

/** @param {Facts} facts */
function serverCheck(facts) {
  const { infos, cluster, masters } = facts
  const { compareAndSet, compareAndDelete } = answer(facts.answers.compares)
  const paths = compareAndSet !== 'swap.lua'
    ? `merges write with ${compareAndSet}${compareAndDelete === 'unlock.lua' ? ' and unlocks run unlock.lua' : ` and unlocks with ${compareAndDelete}`}, without Lua`
    : 'merges and unlocks run Lua scripts (EVALSHA); Redis 8.4+ and Valkey 9.0+ do both with native commands, for less work on the server'
  if (infos.length === 0) return check('ok', 'server', `version unknown (INFO refused); ${paths}.`)
  const [, fields] = infos[0]
  const name = fields.server_name === 'valkey' ? 'Valkey' : 'Redis'
  const version = fields.valkey_version ?? fields.redis_version ?? '?'
  const mode = cluster ? `cluster of ${masters.length} masters` : 'standalone'
  if (Number(version.split('.')[0]) < 6) {
    return check('fail', 'server', `${name} ${version} (${mode}) is older than the store supports (Redis 6.0+, Valkey 7.2+): upgrade it.`)
  }
  return check('ok', 'server', `${name} ${version} (${mode}): ${paths}.`)
}

/**
 * Memory, persistence, replication: each master's INFO (and one CONFIG GET),
 * the worst master's line.
 * @param {Facts} facts
 * @param {string} name
 * @param {{value?: any, error?: unknown} | null} setting the CONFIG GET the check also reads, on every master
 * @param {(at: string, info: Record<string, string>, config: unknown) => DoctorCheck} judge
 */
function perMaster(facts, name, setting, judge) {
  const { infos, infoRefused } = facts
  if (infos.length === 0) {
    // The checks that need INFO, when this user may not run it.
    return check('warn', name, /^[A-Z]+$/.test(infoRefused)
      ? `cannot tell: this user may not run INFO (${infoRefused}); run the doctor as a user that may, or grant +info.`
      : `cannot tell: INFO failed (${infoRefused}).`)
  }
  const configs = setting === null ? null : perNode(answer(setting))
  /** The node's reply, or the one error reply the command failed with as a whole. */
  const configOf = (/** @type {string} */ node) => (configs === null ? null : (configs.find(([n]) => n === node) ?? configs[0])?.[1])
  return worst(infos.map(([node, fields]) => judge(where(facts, node), fields, configOf(node))))
}

/** @param {import('./index').CommandAccess[]} list */
function aclCheck(list) {
  const denied = list.filter((a) => !a.allowed)
  const how = list.some((a) => a.checkedBy === 'probe') ? 'harmless probes on a missing key' : 'ACL DRYRUN'
  const grant = (/** @type {typeof list} */ l) => l.map((a) => `+${a.command}`).join(' ')
  const names = (/** @type {typeof list} */ l) => l.map((a) => a.command.toUpperCase()).join(', ')
  const requiredDenied = denied.filter((a) => a.required)
  if (requiredDenied.length > 0) {
    const reason = requiredDenied[0].reason ? ` (${requiredDenied[0].reason})` : ''
    return check('fail', 'acl', `this user may not run ${names(requiredDenied)}${reason}, which the store needs: calls fail with ERR_AUTH. Grant ${grant(requiredDenied)} (checked with ${how}).`)
  }
  if (denied.length > 0) {
    return check('warn', 'acl', `this user may not run ${names(denied)}: the store does without (scripts instead of native commands; ids(), length(), clear(), ping() or touch() fail). Grant ${grant(denied)} for them (checked with ${how}).`)
  }
  return check('ok', 'acl', `this user may run all ${list.length} commands the store sends (checked with ${how}).`)
}

/** @param {{value?: number[], error?: unknown}} times @param {number} bound the call bound, in ms */
function latencyCheck(times, bound) {
  if (times.error && isTimeout(times.error)) {
    return check('fail', 'latency', `a PING got no answer within the call bound of ${bound} ms (connectTimeout + commandTimeout): calls will time out. Move the app near Redis or raise commandTimeout.`)
  }
  const sorted = [.../** @type {number[]} */ (answer(times))].sort((a, b) => a - b)
  const p50 = sorted[Math.floor(PINGS * 0.5)]
  const p99 = sorted[Math.ceil(PINGS * 0.99) - 1]
  const ms = (/** @type {number} */ t) => `${t < 10 ? t.toFixed(2) : t.toFixed(0)} ms`
  const rtt = `round trip p50 ${ms(p50)}, p99 ${ms(p99)} over ${PINGS} PINGs`
  if (p99 >= bound / 2) {
    return check('fail', 'latency', `${rtt}: a request's calls come near the call bound of ${bound} ms (connectTimeout + commandTimeout) and will time out; move the app near Redis or raise commandTimeout.`)
  }
  if (p50 >= 2) {
    return check('warn', 'latency', `${rtt}: every request waits at least this per call; Redis in the app's zone or network is usually under 1 ms.`)
  }
  return check('ok', 'latency', `${rtt}.`)
}

/** @param {Facts} facts */
function clusterCheck(facts) {
  const bad = []
  for (const [node, reply] of perNode(answer(/** @type {any} */ (facts.answers.clusterInfo)))) {
    const fields = parseInfo(String(reply))
    if (isError(reply)) bad.push(`${node} (${errorText(reply)})`)
    else if (fields.cluster_state !== 'ok' || fields.cluster_slots_ok !== '16384') {
      bad.push(`${node} (state ${fields.cluster_state}, ${fields.cluster_slots_ok ?? '?'} of 16384 slots served)`)
    }
  }
  if (bad.length > 0) {
    return check('fail', 'cluster', `not every slot is served: ${bad.join('; ')}: calls on keys in the missing slots fail with ERR_CONNECTION (CLUSTERDOWN). Assign or recover the slots.`)
  }
  return check('ok', 'cluster', `${facts.masters.length} masters serve all 16384 slots.`)
}

/** @param {Facts} facts */
function scriptsCheck(facts) {
  const { cluster } = facts
  const replies = perNode(answer(facts.answers.scripts))
  const missing = replies.filter(([, r]) => !Array.isArray(r) || r.some((x) => x !== 1))
  if (missing.length === 0) return check('ok', 'scripts', `the store's 3 scripts are loaded${cluster ? ' on every master' : ''}.`)
  const nodes = cluster ? ` on ${missing.map(([n]) => n).join(', ')}` : ''
  const refused = missing.find(([, r]) => isError(r))
  if (refused) return check('warn', 'scripts', `cannot tell whether the scripts are loaded${nodes}: ${errorText(refused[1])}.`)
  return check('warn', 'scripts', `the store's scripts are not loaded${nodes}: the first ${serverCompares(facts) ? 'merge conflict' : 'merge or unlock'} loads them (NOSCRIPT, then SCRIPT LOAD: one more round trip); preloadScript: true loads them when the store is created.`)
}

/** The worst of several nodes' checks. @param {DoctorCheck[]} found */
function worst(found) {
  const rank = { ok: 0, warn: 1, fail: 2 }
  return found.reduce((a, b) => (rank[b.level] > rank[a.level] ? b : a))
}

/** @param {string} at @param {Record<string, string>} info */
function memoryCheck(at, info) {
  const max = Number(info.maxmemory ?? 0)
  const used = Number(info.used_memory ?? 0)
  const policy = info.maxmemory_policy ?? '?'
  if (max === 0) {
    return check('ok', 'memory', `${at}no maxmemory: Redis never evicts sessions (used ${size(used)}); it grows with them, so watch the machine's memory.`)
  }
  const share = `${size(used)} used of maxmemory ${size(max)}, ${Math.round((100 * used) / max)} %`
  if (policy.startsWith('allkeys-')) {
    return check('fail', 'memory', `${at}maxmemory-policy ${policy}: at maxmemory (${share}) Redis evicts any key, sessions and held locks included, and users are logged out without an error. Set maxmemory-policy noeviction, and give Redis room.`)
  }
  if (policy.startsWith('volatile-')) {
    return check('warn', 'memory', `${at}maxmemory-policy ${policy}: sessions and locks carry a TTL, so at maxmemory (${share}) Redis evicts them and users are logged out. noeviction keeps them (saves then fail with OOM).`)
  }
  if (used >= max * FULL) {
    return check('fail', 'memory', `${at}noeviction with ${share}: saves fail with OOM (ERR_REDIS) once it is full. Raise maxmemory or remove sessions (store.clear()).`)
  }
  return check('ok', 'memory', `${at}noeviction, ${share}: sessions are never evicted; at maxmemory saves fail with OOM, so keep headroom.`)
}

/** @param {string} at @param {Record<string, string>} info @param {unknown} save CONFIG GET save's reply */
function persistenceCheck(at, info, save) {
  if (info.rdb_last_bgsave_status === 'err' || info.aof_last_write_status === 'err') {
    return check('fail', 'persistence', `${at}the last ${info.rdb_last_bgsave_status === 'err' ? 'RDB snapshot' : 'AOF write'} failed: with stop-writes-on-bgsave-error, Redis refuses every save (MISCONF). Fix the disk or its permissions.`)
  }
  const aof = info.aof_enabled === '1'
  const snapshots = Array.isArray(save) ? String(save[1] ?? '') : save && typeof save === 'object' && 'save' in save ? String(/** @type {any} */ (save).save) : null
  if (aof) {
    return check('ok', 'persistence', `${at}AOF on${snapshots ? `, RDB snapshots (save ${snapshots})` : ''}: a restart keeps sessions, up to the last second's writes (appendfsync everysec).`)
  }
  if (snapshots === null) {
    return check('warn', 'persistence', `${at}AOF off, and whether RDB snapshots are on is unknown (CONFIG GET refused: ${errorText(save)}); without either, a restart logs every user out.`)
  }
  if (snapshots.trim() === '') {
    return check('warn', 'persistence', `${at}persistence off (no AOF, no RDB snapshots): every restart of Redis logs every user out. Set appendonly yes (or save 3600 1 300 100 60 10000) unless that is intended.`)
  }
  return check('ok', 'persistence', `${at}RDB snapshots (save ${snapshots}), AOF off: a crash loses the sessions written since the last snapshot; appendonly yes narrows that to a second.`)
}

/** @param {string} at @param {Record<string, string>} info @param {unknown} min CONFIG GET min-replicas-to-write's reply */
function replicationCheck(at, info, min) {
  const role = info.role ?? '?'
  if (role !== 'master') {
    const what = role === 'slave' ? 'replica' : role
    return check('fail', 'replication', `${at}this node is a ${what}: every save fails with READONLY. Point the store at the master (or at its sentinels).`)
  }
  const replicas = Number(info.connected_slaves ?? 0)
  const wanted = Array.isArray(min) ? Number(min[1] ?? 0) : min && typeof min === 'object' && 'min-replicas-to-write' in min ? Number(/** @type {any} */ (min)['min-replicas-to-write']) : 0
  if (wanted > replicas) {
    return check('fail', 'replication', `${at}min-replicas-to-write ${wanted} with ${replicas} replica(s) connected: every save fails with NOREPLICAS. Bring the replicas back or lower the setting.`)
  }
  if (replicas === 0) {
    return check('warn', 'replication', `${at}master with no replica: if this server is lost, its sessions go with it and nothing takes over. Add a replica (with Sentinel) for failover.`)
  }
  return check('ok', 'replication', `${at}master with ${replicas} replica(s), min-replicas-to-write ${wanted}${wanted === 0 ? ': a failover may lose the last writes; min-replicas-to-write 1 refuses writes no replica is taking' : ''}.`)
}

/**
 * How many sessions there are (counted for at most COUNT_BUDGET_MS, the
 * masters side by side) and the memory of a few (their MEMORY USAGE at once).
 * @param {AddonStore} addon
 * @param {string[]} masters
 * @param {(to: string, ...args: string[]) => Promise<any>} query
 * @returns {Promise<Counted>}
 */
async function countSessions(addon, masters, query) {
  const started = Date.now()
  /** @type {[string, string][]} node and id */
  const sampled = []
  /** @type {[string, string][]} node and user, of users' index keys (userIdPath) */
  const sampledUsers = []
  let users = 0
  const walks = await Promise.all(
    masters.map(async (node) => {
      let count = 0
      let cursor = '0'
      do {
        const page = await addon.walkPage(node, cursor, PAGE, sampled.length < SAMPLES ? 'ids' : 'count')
        count += page.count
        users += page.userCount
        for (const id of page.ids) if (sampled.length < SAMPLES) sampled.push([node, id])
        for (const user of page.users) if (sampledUsers.length < SAMPLES) sampledUsers.push([node, user])
        cursor = page.cursor
        if (Date.now() - started > COUNT_BUDGET_MS && cursor !== '0') return { count, complete: false }
      } while (cursor !== '0')
      return { count, complete: true }
    }),
  )
  const usages = await Promise.all(sampled.map(([node, id]) => query(node, 'MEMORY', 'USAGE', addon.prefix + id)))
  const indexKey = (/** @type {string} */ user) => addon.prefix + addon.userPrefix + user
  const [indexUsages, indexEntries] = await Promise.all([
    Promise.all(sampledUsers.map(([node, user]) => query(node, 'MEMORY', 'USAGE', indexKey(user)))),
    Promise.all(sampledUsers.map(([node, user]) => query(node, 'ZCARD', indexKey(user)))),
  ])
  const refused = usages.find(isError) ?? indexUsages.find(isError)
  return {
    count: walks.reduce((n, w) => n + w.count, 0),
    complete: walks.every((w) => w.complete),
    sizes: usages.filter((u) => typeof u === 'number'),
    sizeRefused: refused ? errorText(refused) : '',
    users,
    indexSizes: indexUsages.filter((u) => typeof u === 'number'),
    indexEntries: indexEntries.filter((u) => typeof u === 'number'),
  }
}

/** @typedef {{count: number, complete: boolean, sizes: number[], sizeRefused: string, users: number, indexSizes: number[], indexEntries: number[]}} Counted */

/**
 * The users' indexes line (userIdPath): how many, and the entries and
 * memory of a few; a warning on a server without SET … PXAT.
 * @param {AddonStore} addon
 * @param {Counted} found
 * @param {[string, Record<string, string>][]} infos
 */
function usersCheck(addon, { complete, sizeRefused, users, indexSizes, indexEntries }, infos) {
  const under = JSON.stringify(addon.prefix + addon.userPrefix)
  const counted = `${complete ? '' : 'at least '}${users.toLocaleString('en-US')} user index${users === 1 ? '' : 'es'} under ${under} (userIdPath)`
  // A write ends before its index entry by SET … PXAT (Redis 6.2+, Valkey).
  const before62 = (/** @type {string} */ v) => {
    const [major = 0, minor = 0] = v.split('.').map(Number)
    return major * 100 + minor < 602
  }
  const old = infos.map(([, f]) => f).find((f) => f.redis_version && !f.valkey_version && f.server_name !== 'valkey' && before62(f.redis_version))
  if (old) {
    return check('warn', 'users', `${counted}; Redis ${old.redis_version} has no SET … PXAT, so a write applied after its call bound (held on the network, rejected ERR_TIMEOUT) can outlive its index entry, unlisted and not ended by destroyUserSessions. Redis 6.2 or later (or Valkey) ends it first.`)
  }
  if (sizeRefused || indexSizes.length === 0) return check('ok', 'users', `${counted}.`)
  const mean = (/** @type {number[]} */ a) => a.reduce((x, y) => x + y, 0) / a.length
  const each = mean(indexSizes)
  const entries = indexEntries.length ? `, ${mean(indexEntries).toFixed(1)} entries` : ''
  return check(
    'ok',
    'users',
    `${counted}; an index takes about ${size(Math.round(each))}${entries} (MEMORY USAGE and ZCARD of ${indexSizes.length}), about ${size(Math.round(each * users))} in all. Entries of ended sessions leave once their ttl has passed.`,
  )
}

/**
 * The sessions line.
 * @param {AddonStore} addon
 * @param {Counted} found
 * @param {[string, Record<string, string>][]} infos
 */
function sessionsCheck(addon, { count, complete, sizes, sizeRefused }, infos) {
  const prefix = JSON.stringify(addon.prefix)
  const counted = `${complete ? '' : 'at least '}${count.toLocaleString('en-US')} session${count === 1 ? '' : 's'} under ${prefix}`
  if (sizeRefused) return check('ok', 'sessions', `${counted}; their memory is unknown (MEMORY USAGE refused: ${sizeRefused}).`)
  if (sizes.length === 0) return check('ok', 'sessions', `${counted}.`)
  const each = sizes.reduce((a, b) => a + b, 0) / sizes.length
  let room = ''
  const [, info] = infos[0] ?? ['', {}]
  const max = Number(info.maxmemory ?? 0)
  if (max > 0) {
    const left = Math.max(0, max - Number(info.used_memory ?? 0))
    room = `; maxmemory leaves room for about ${Math.floor(left / each).toLocaleString('en-US')} more`
  }
  return check('ok', 'sessions', `${counted}; a session takes about ${size(Math.round(each))} (MEMORY USAGE of ${sizes.length}), about ${size(Math.round(each * count))} in all${room}.`)
}

/** The report as lines of text, for a terminal. @param {DoctorReport} report */
function format(report) {
  const mark = { ok: '✓', warn: '⚠', fail: '✗' }
  const width = Math.max(...report.checks.map((c) => c.name.length))
  const lines = report.checks.map((c) => `${mark[c.level]} ${c.name.padEnd(width)}  ${c.message}`)
  const fails = report.checks.filter((c) => c.level === 'fail').length
  const warns = report.checks.filter((c) => c.level === 'warn').length
  lines.push('', `${fails} problem${fails === 1 ? '' : 's'}, ${warns} warning${warns === 1 ? '' : 's'}.`)
  return lines.join('\n')
}

module.exports = { examine, format, escapeControls }
