#!/usr/bin/env node
// @ts-check
'use strict'

// `npx relay-session-redis doctor [url]`: checks a server's settings for
// sessions, connected as a store with the same options would be.

const { readFileSync } = require('node:fs')
const { parseArgs } = require('node:util')
const { createRedisSessionStore } = require('./store.js')
const { escapeControls, format } = require('./doctor.js')

const USAGE = `Usage: relay-session-redis doctor [url] [options]

Checks a Redis (or Valkey) server's settings for sessions, connected as the
store would be. The URL comes from the argument or REDIS_URL (default
redis://127.0.0.1:6379). Exit code 1 when a check fails (✗).

Options (those of createRedisSessionStore):
  --cluster <url,url,…>       Redis Cluster seed nodes
  --sentinel <url,url,…>      Sentinels, with --master-name
  --master-name <name>        The master the sentinels monitor
  --sentinel-username <user>  --sentinel-password <password>
  --username <user>           ACL user (or the URL's)
  --password <password>       (or REDIS_PASSWORD)
  --db <n>                    Database index
  --prefix <prefix>           Session key prefix (default sess:)
  --lock-prefix <prefix>      Lock key prefix (default lock:)
  --tls-ca <file>  --tls-cert <file>  --tls-key <file>   PEM files (rediss:// URLs)
  --connect-timeout <ms>  --command-timeout <ms>
  --json                      The report as JSON
  -h, --help`

/** @param {string} text */
function fail(text) {
  process.stderr.write(`relay-session-redis: ${text}\n`)
  process.exit(2)
}

/** @param {string[]} argv */
function options(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      cluster: { type: 'string' },
      sentinel: { type: 'string' },
      'master-name': { type: 'string' },
      'sentinel-username': { type: 'string' },
      'sentinel-password': { type: 'string' },
      username: { type: 'string' },
      password: { type: 'string' },
      db: { type: 'string' },
      prefix: { type: 'string' },
      'lock-prefix': { type: 'string' },
      'tls-ca': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'connect-timeout': { type: 'string' },
      'command-timeout': { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  const [command, url, ...extra] = positionals
  if (values.help || command === undefined) {
    process.stdout.write(`${USAGE}\n`)
    process.exit(command === undefined && !values.help ? 2 : 0)
  }
  if (command !== 'doctor') fail(`unknown command '${command}'\n\n${USAGE}`)
  if (extra.length > 0) fail(`unexpected arguments: ${extra.join(' ')}`)
  /** @param {string | undefined} v @param {string} name */
  const number = (v, name) => {
    if (v === undefined) return undefined
    const n = Number(v)
    if (!Number.isFinite(n)) fail(`--${name} must be a number, got '${v}'`)
    return n
  }
  const list = (/** @type {string} */ v) => v.split(',').map((s) => s.trim()).filter(Boolean)
  /** @type {import('./store').StoreOptions} */
  const o = {}
  if (values.cluster) o.cluster = { nodes: list(values.cluster) }
  else if (values.sentinel) {
    o.sentinel = { nodes: list(values.sentinel), masterName: values['master-name'] ?? '' }
    if (values['sentinel-username']) o.sentinel.username = values['sentinel-username']
    if (values['sentinel-password']) o.sentinel.password = values['sentinel-password']
  } else {
    o.url = url ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
  }
  if ((values.cluster || values.sentinel) && url !== undefined) fail('give a URL, --cluster or --sentinel, not two of them')
  if (values.username) o.username = values.username
  const password = values.password ?? process.env.REDIS_PASSWORD
  if (password) o.password = password
  o.db = number(values.db, 'db')
  if (values.prefix !== undefined) o.prefix = values.prefix
  if (values['lock-prefix'] !== undefined) o.lockPrefix = values['lock-prefix']
  o.connectTimeout = number(values['connect-timeout'], 'connect-timeout')
  o.commandTimeout = number(values['command-timeout'], 'command-timeout')
  const pem = (/** @type {string | undefined} */ file) => (file === undefined ? undefined : readFileSync(file, 'utf8'))
  if (values['tls-ca'] || values['tls-cert'] || values['tls-key']) {
    o.tls = { ca: pem(values['tls-ca']), cert: pem(values['tls-cert']), key: pem(values['tls-key']) }
  }
  return { store: o, json: values.json === true }
}

async function main() {
  let parsed
  try {
    parsed = options(process.argv.slice(2))
  } catch (e) {
    fail(/** @type {Error} */ (e).message)
    return
  }
  let store
  try {
    store = createRedisSessionStore(parsed.store)
  } catch (e) {
    fail(/** @type {Error} */ (e).message)
    return
  }
  try {
    const report = await store.doctor()
    const target = require('node:util').inspect(store)
    if (parsed.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
    else process.stdout.write(`relay-session-redis doctor: ${target}\n\n${format(report)}\n`)
    process.exitCode = report.ok ? 0 : 1
  } catch (e) {
    const err = /** @type {any} */ (e)
    // The message may quote the server's words: shown, never obeyed.
    const message = escapeControls(String(err?.message ?? e))
    const line = `cannot check: ${err?.code ? `${err.code}: ` : ''}${message}`
    if (parsed.json) process.stdout.write(`${JSON.stringify({ ok: false, error: { code: err?.code, message } }, null, 2)}\n`)
    else process.stderr.write(`relay-session-redis doctor: ✗ ${line}\n`)
    process.exitCode = 1
  } finally {
    await store.close()
  }
}

main()
