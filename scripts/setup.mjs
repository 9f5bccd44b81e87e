#!/usr/bin/env node
// Readies a fresh clone for `npm run demo` and `npm test`: installs the npm
// dependencies (npm ci) when node_modules is missing or older than the lock
// file, and says what to install when Rust (to build the addon) is missing.
// Uses nothing but Node itself, so it runs before the dependencies exist.
import { spawnSync } from 'node:child_process'
import { existsSync, statSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const installed = path.join(root, 'node_modules', '.package-lock.json')
const lock = path.join(root, 'package-lock.json')

if (!existsSync(installed) || statSync(installed).mtimeMs < statSync(lock).mtimeMs) {
  console.error('relay-session-redis: installing the npm dependencies (npm ci)')
  const npm = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit' })
  if (npm.status !== 0) process.exit(npm.status ?? 1)
}
if (spawnSync('cargo', ['--version'], { stdio: 'ignore' }).status !== 0) {
  console.error('relay-session-redis: building the addon needs Rust 1.88 or later: curl https://sh.rustup.rs -sSf | sh')
  process.exit(1)
}
