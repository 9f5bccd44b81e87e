// Starts throwaway redis-server processes on free loopback ports for the tests
// (and the demo and benchmarks), and stops them.
import { spawn, spawnSync } from 'node:child_process'
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import net from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

const INSTALL_HINT =
  'redis-server was not found. Install it (Debian/Ubuntu: `sudo apt-get install redis-server`, ' +
  'macOS: `brew install redis`) or point REDIS_SERVER_BIN at a redis-server binary.'

/** The redis-server binary: REDIS_SERVER_BIN, else the first on PATH. */
export function findRedisServer() {
  const candidates = process.env.REDIS_SERVER_BIN
    ? [process.env.REDIS_SERVER_BIN]
    : (process.env.PATH ?? '').split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, 'redis-server'))
  for (const file of candidates) {
    try {
      accessSync(file, constants.X_OK)
      return file
    } catch {}
  }
  throw new Error(INSTALL_HINT)
}

let hasTls
/** Whether the redis-server binary was built with TLS (some builds are not); asked once. */
export function serverHasTls() {
  // Listening nowhere, a TLS build exits at once; others refuse the directive.
  if (hasTls === undefined) {
    const r = spawnSync(findRedisServer(), ['--port', '0', '--tls-port', '0', '--save', ''], { encoding: 'utf8', timeout: 5000 })
    hasTls = !/Bad directive/.test(`${r.stdout}${r.stderr}`)
  }
  return hasTls
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (srv.address())
      srv.close(() => resolve(port))
    })
  })
}

/** Sends one inline command and resolves the first reply line. */
export function rawCommand(port, command, timeoutMs = 500) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port })
    let buf = ''
    const done = (fn, v) => {
      sock.destroy()
      fn(v)
    }
    sock.setTimeout(timeoutMs, () => done(reject, new Error('timeout')))
    sock.on('error', (e) => done(reject, e))
    sock.on('connect', () => sock.write(command + '\r\n'))
    sock.on('data', (d) => {
      buf += d
      const i = buf.indexOf('\r\n')
      if (i >= 0) done(resolve, buf.slice(0, i))
    })
  })
}

/**
 * Starts a redis-server on a free loopback port, persistence off.
 * `config` names a config file to start from (a sentinel's).
 *
 * A port that was free a moment ago may be taken before the server binds it:
 * the ports freePort() hands out are the ephemeral ones, which every outgoing
 * connection of the machine (a store reconnecting, another test file's
 * clients) also takes as its source port. A server that finds its port in use
 * is started again: on another free port, or, when `port` was given (a
 * restart on the same port), on that port once the connection holding it is
 * gone.
 * @param {{args?: string[], port?: number, config?: string, bin?: string}} [opts]
 */
export async function startRedis(opts = {}) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts, opts.port ?? (await freePort()))
    } catch (e) {
      if (!(e instanceof PortInUse) || attempt === 20) throw e
      await sleep(opts.port === undefined ? 0 : 100)
    }
  }
}

class PortInUse extends Error {}

/**
 * @param {{args?: string[], port?: number, config?: string, bin?: string}} opts
 * @param {number} port
 */
async function startOnce(opts, port) {
  const bin = opts.bin ?? findRedisServer()
  // A directory of its own: no dump file of another server (or version) is
  // ever read from, or left in, the current directory.
  const ownDir = (opts.args ?? []).includes('--dir') ? null : mkdtempSync(path.join(tmpdir(), 'rsr-redis-'))
  const args = [
    ...(opts.config ? [opts.config] : []),
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    ...(ownDir ? ['--dir', ownDir] : []),
    ...(opts.args ?? []),
  ]
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (d) => (output += d))
  child.stderr.on('data', (d) => (output += d))
  let exited = false
  child.on('exit', () => {
    exited = true
    if (ownDir) rmSync(ownDir, { recursive: true, force: true })
  })
  const server = {
    port,
    url: `redis://127.0.0.1:${port}`,
    child,
    /** Sends a signal to the server process. */
    signal: (sig) => child.kill(sig),
    async stop() {
      if (exited) return
      const gone = new Promise((r) => child.once('exit', r))
      child.kill('SIGKILL')
      await gone
    },
  }
  for (let i = 0; i < 200; i++) {
    if (exited) {
      // Its output may still be on its way.
      await sleep(10)
      if (/Address already in use/.test(output)) throw new PortInUse(`port ${port} is in use`)
      throw new Error(`redis-server exited at start:\n${output}`)
    }
    try {
      await rawCommand(port, 'PING') // any reply, +PONG or -NOAUTH, means it is up
      return server
    } catch {}
    await sleep(25)
  }
  await server.stop()
  throw new Error(`redis-server did not answer on port ${port}:\n${output}`)
}
