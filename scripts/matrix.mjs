#!/usr/bin/env node
// npm run test:matrix: the whole JS suite (standalone, cluster, HA) against
// each server version harness/servers.mjs can get (built once, kept in
// .servers/). A version that cannot be got is reported as such, not as a
// failure. `npm run test:matrix -- 8.6 valkey-9` runs the versions whose key
// or name contains a word given. `--suites=standalone,cluster` runs only
// those suites; `--require` makes a version that cannot be got a failure
// (npm test runs the standalone suite on the newest Redis and Valkey so).
import { execFileSync, spawnSync } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { cliNextTo, SERVERS, serverBinary } from '../harness/servers.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const versions = Object.entries(SERVERS).map(([key, s]) => ({ key, name: s.name }))
const args = process.argv.slice(2)
const only = args.filter((a) => !a.startsWith('--'))
const required = args.includes('--require')
const suiteNames = args.find((a) => a.startsWith('--suites='))?.slice('--suites='.length).split(',')

// The package's own test scripts, so that the matrix runs what npm test runs.
const suites = [
  { name: 'standalone', script: 'test:js' },
  { name: 'cluster', script: 'test:cluster' },
  { name: 'ha', script: 'test:failover' },
].filter((s) => !suiteNames || suiteNames.includes(s.name))

const rows = []
for (const v of versions) {
  if (only.length && !only.some((o) => `${v.key} ${v.name}`.toLowerCase().includes(o.toLowerCase()))) continue
  let bin
  try {
    bin = serverBinary(v.key)
  } catch (e) {
    const why = e.message.split('\n')[0]
    rows.push({ version: v.name, server: '-', result: `${required ? 'FAIL: ' : ''}not available: ${why}` })
    continue
  }
  const server = execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim().split(' ').find((w) => w.startsWith('v='))
  const cli = cliNextTo(bin)
  const counts = []
  let ok = true
  for (const s of suites) {
    console.log(`\n== ${v.name}, ${s.name} (${bin})`)
    const r = spawnSync('npm', ['run', '-s', s.script], {
      cwd: root,
      env: { ...process.env, REDIS_SERVER_BIN: bin, REDIS_CLI_BIN: cli },
      encoding: 'utf8',
      maxBuffer: 1 << 28,
    })
    const out = `${r.stdout}${r.stderr}`
    const num = (k) => Number(new RegExp(`^# ${k} (\\d+)`, 'm').exec(out)?.[1] ?? NaN)
    const pass = num('pass')
    const fail = num('fail')
    const skipped = num('skipped') + (out.match(/# SKIP/g) ?? []).length
    if (r.status !== 0) {
      ok = false
      console.log(failures(out))
    }
    counts.push(`${s.name} ${pass} passed${fail ? `, ${fail} failed` : ''}${skipped ? `, ${skipped} skipped` : ''}`)
    console.log(counts.at(-1))
  }
  rows.push({ version: v.name, server, result: `${ok ? 'pass' : 'FAIL'}: ${counts.join('; ')}` })
}

/**
 * Each failed test of a node:test run with its diagnostic block (the
 * assertion's message, expected and actual), up to 40 lines each, for at most
 * 10 failures.
 * @param {string} out
 */
function failures(out) {
  const lines = out.split('\n')
  const shown = []
  for (let i = 0; i < lines.length && shown.length < 10; i++) {
    if (!/^\s*not ok/.test(lines[i])) continue
    let end = i + 1
    while (end < lines.length && end - i < 40 && !/^\s*\.\.\.$/.test(lines[end])) end++
    shown.push(lines.slice(i, end).join('\n'))
  }
  return shown.join('\n')
}

console.log('\n| server | version | result |\n|---|---|---|')
for (const r of rows) console.log(`| ${r.version} | ${r.server} | ${r.result} |`)
process.exitCode = rows.some((r) => r.result.startsWith('FAIL')) ? 1 : 0
