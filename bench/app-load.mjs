// The load of `npm run bench:app`, in a process of its own:
//   node bench/app-load.mjs '{"port":..,"clients":32,"warmup":1,"seconds":4,"serverPid":..,"redisPort":..}'
// (serverPid: the app's process; with several, the primary: its children count too)
// `clients` simulated users, each with its own keep-alive connection and
// cookie, one request at a time: 70 % GET /me, 20 % POST /cart, 5 % POST
// /field, 2.5 % POST /login (rotates the id), 2.5 % POST /logout. After
// `warmup` seconds it measures for `seconds`: requests/s, latency p50/p99,
// the app process's CPU per request by thread (read from /proc), and Redis's
// CPU per request (INFO cpu). Prints one JSON line.
import { readFileSync, readdirSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { redisCpuSeconds } from './redis-cpu.mjs'
import { Client } from 'undici'

const cfg = JSON.parse(process.argv[2])
const origin = `http://127.0.0.1:${cfg.port}`
const ROUTES = [
  [0.7, 'GET', '/me'],
  [0.9, 'POST', '/cart'],
  [0.95, 'POST', '/field'],
  [0.975, 'POST', '/login'],
  [1, 'POST', '/logout'],
]
const pick = () => {
  const r = Math.random()
  return ROUTES.find(([upTo]) => r < upTo)
}

const TICK = 100 // clock ticks per second (USER_HZ)
/** The app's processes: `pid` and its children (the workers of several). */
function appPids(pid) {
  let children = ''
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
  } catch {}
  return [pid, ...children.split(' ').filter(Boolean).map(Number)]
}

/**
 * CPU seconds of the app's processes, in all and by thread: the main
 * threads, the addon's workers (named relay-session-redis), and Node's other
 * threads (V8's GC and compiler workers and libuv's pool, all named "node" in
 * Node 20).
 */
function appCpu(root) {
  const byKind = { main: 0, addon: 0, other: 0 }
  for (const pid of appPids(root)) addCpu(pid, byKind)
  return { total: byKind.main + byKind.addon + byKind.other, ...byKind }
}

/** Adds the CPU seconds of process `pid`'s threads to `byKind`. */
function addCpu(pid, byKind) {
  let tids = []
  try {
    tids = readdirSync(`/proc/${pid}/task`)
  } catch {
    return // the process ended
  }
  for (const tid of tids) {
    let stat
    try {
      stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
    } catch {
      continue // the thread ended
    }
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const secs = (Number(fields[11]) + Number(fields[12])) / TICK
    const kind = tid === String(pid) ? 'main' : name.startsWith('relay-session') ? 'addon' : 'other'
    byKind[kind] += secs
  }
}

const admin = new Redis({ host: '127.0.0.1', port: cfg.redisPort })
const redisCpu = () => redisCpuSeconds(admin)
/** Redis's INFO commandstats: calls and µs of CPU by command, so far. */
async function commandStats() {
  const stats = {}
  for (const m of (await admin.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    stats[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) }
  }
  return stats
}

let measuring = false
let stop = false
let count = 0
let errors = 0
let corruptCarts = 0
const latencies = []

async function user() {
  const client = new Client(origin, { keepAliveTimeout: 60_000, pipelining: 1 })
  let cookie = null
  while (!stop) {
    const [, method, path] = pick()
    const t0 = performance.now()
    const res = await client.request({ method, path, headers: cookie ? { cookie } : {} })
    await res.body.dump()
    const setCookie = res.headers['set-cookie']
    if (setCookie) cookie = String(setCookie).split(';')[0]
    // Counted from the start, warm-up included: a cart goes bad once.
    if (res.headers['x-cart-corrupt']) corruptCarts++
    if (measuring) {
      latencies.push(performance.now() - t0)
      count++
      if (res.statusCode >= 400) errors++
    }
  }
  await client.close()
}

const users = Array.from({ length: cfg.clients }, user)
await sleep(cfg.warmup * 1000)
const cpu0 = appCpu(cfg.serverPid)
const redis0 = await redisCpu()
const commands0 = await commandStats()
const t0 = performance.now()
measuring = true
await sleep(cfg.seconds * 1000)
measuring = false
const elapsed = (performance.now() - t0) / 1000
const cpu1 = appCpu(cfg.serverPid)
const redis1 = await redisCpu()
const commands1 = await commandStats()
stop = true
await Promise.all(users)
admin.disconnect()

latencies.sort((a, b) => a - b)
const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]
const perRequest = (secs) => (secs * 1e6) / count // µs
process.stdout.write(
  `${JSON.stringify({
    requests: count,
    errors,
    corruptCarts,
    rps: count / elapsed,
    p50: pct(50),
    p99: pct(99),
    cpu: perRequest(cpu1.total - cpu0.total),
    main: perRequest(cpu1.main - cpu0.main),
    addon: perRequest(cpu1.addon - cpu0.addon),
    other: perRequest(cpu1.other - cpu0.other),
    redis: perRequest(redis1 - redis0),
    // Per request: calls and µs of each command (INFO commandstats).
    commands: Object.fromEntries(
      Object.entries(commands1).map(([cmd, { calls, usec }]) => {
        const before = commands0[cmd] ?? { calls: 0, usec: 0 }
        return [cmd, { calls: (calls - before.calls) / count, usec: (usec - before.usec) / count }]
      }),
    ),
  })}\n`,
)
