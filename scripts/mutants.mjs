#!/usr/bin/env node
// The mutation runs (npm run mutants; not part of npm test, it takes hours):
// cargo-mutants over the Rust core the tests must guard (src/merge and the
// store's texts, users' indexes, locks, keys and replies: .cargo/mutants.toml)
// with the unit and model tests, and Stryker over lib/ with the test files
// that exercise it (scripts/stryker.config.json). Each run writes its
// outcomes under mutants.out/ and this prints, per file, the mutants the
// tests caught and those that survived.
//
//   npm run mutants             both runs
//   npm run mutants -- rust     cargo-mutants only (cargo install cargo-mutants)
//   npm run mutants -- lib      Stryker only (fetched by npx, pinned here)
//   npm run mutants -- report   the summary of the last runs
//   npm run mutants -- retest   each Rust mutant the last run missed, applied to
//                               the tree as it is now and run against the unit
//                               and model tests again (cargo-mutants' own
//                               --iterate names mutants by line, so a test
//                               added above them makes them all new)
//   npm run mutants -- recheck  each Rust mutant the unit tests missed, built
//                               into the addon and run against the JS test
//                               files of its module (RECHECK below): what the
//                               suites on real servers catch, cargo-mutants
//                               cannot see. Changes the tree while it runs.
//   MUTANTS_FILE=src/store/users.rs npm run mutants -- retest (or recheck)
//                               the same, for one file's mutants only;
//                               MUTANTS_MATCH=<regex> for those whose name
//                               (file:line:col: what it replaces) matches
//
// The model tests run shorter than in npm test (MUTANTS_BATCH_SEEDS,
// MUTANTS_TEXTS_SEEDS), as each mutant runs them all.
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const out = path.join(root, 'mutants.out')
/** Stryker 9 is the last line that runs on Node 20. */
const STRYKER = '@stryker-mutator/core@9.5.1'
const what = process.argv[2] ?? 'all'

function run(cmd, args, env = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } })
  if (r.error) throw r.error
  return r.status
}

if (what === 'all' || what === 'rust') {
  if (spawnSync('cargo', ['mutants', '--version'], { stdio: 'ignore' }).status !== 0) {
    console.error('cargo-mutants is not installed: cargo install --locked cargo-mutants')
    process.exit(1)
  }
  // Exit 2 means mutants survived: the report says which.
  run('cargo', ['mutants', '--output', out], {
    BATCH_MODEL_SEEDS: process.env.MUTANTS_BATCH_SEEDS ?? '60',
    TEXTS_MODEL_SEEDS: process.env.MUTANTS_TEXTS_SEEDS ?? '150',
  })
}
/**
 * Applies (or with `reverse`, takes back) a cargo-mutants diff to `file`: its
 * header names the mutation, not a path. Context must match exactly; lines
 * may have moved.
 */
function patch(file, diff, reverse = false) {
  const args = ['-s', '-N', '-F', '0', '--no-backup-if-mismatch', '-r', '-', ...(reverse ? ['-R'] : []), file, diff]
  const applied = spawnSync('patch', args, { cwd: root, stdio: 'ignore' }).status === 0
  applying = applied && !reverse ? [file, diff] : null
  return applied
}

/** The mutant applied now, taken back if the run is stopped. @type {[string, string] | null} */
let applying = null
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    if (applying) patch(...applying, true)
    process.exit(130)
  })
}

/** The JS test files that exercise each module cargo-mutants mutates. */
const RECHECK = {
  'src/merge/splice.rs': ['merge.test.mjs', 'fuzz.test.mjs', 'validation.test.mjs'],
  'src/merge/splicer.rs': ['hardening.test.mjs', 'merge.test.mjs'],
  'src/store/texts.rs': ['read-cache.test.mjs', 'merge.test.mjs', 'contract.test.mjs'],
  'src/store/users.rs': ['users.test.mjs', 'users-fuzz.test.mjs'],
  'src/store/locks.rs': ['contract.test.mjs', 'hardening.test.mjs', 'concurrency.test.mjs'],
  'src/store/keys.rs': ['store.test.mjs', 'admin.test.mjs', 'validation.test.mjs', 'users.test.mjs'],
  'src/store/replies.rs': ['store.test.mjs', 'contract.test.mjs', 'merge.test.mjs'],
}

/** retest and recheck take one file's mutants only when MUTANTS_FILE names it. */
const only = process.env.MUTANTS_FILE
const match = process.env.MUTANTS_MATCH ? new RegExp(process.env.MUTANTS_MATCH) : null
/** Whether retest and recheck take mutant `m`: of MUTANTS_FILE, named as MUTANTS_MATCH says. */
const chosen = (/** @type {{file: string, name: string}} */ m) => (!only || m.file === only) && (!match || match.test(m.name))

if (what === 'retest') {
  const rust = JSON.parse(readFileSync(path.join(out, 'mutants.out', 'outcomes.json'), 'utf8'))
  const results = []
  const env = { ...process.env, BATCH_MODEL_SEEDS: process.env.MUTANTS_BATCH_SEEDS ?? '60', TEXTS_MODEL_SEEDS: process.env.MUTANTS_TEXTS_SEEDS ?? '150' }
  for (const o of rust.outcomes) {
    if (o.summary !== 'MissedMutant') continue
    const m = o.scenario.Mutant
    if (!chosen(m)) continue
    const diff = path.join(out, 'mutants.out', o.diff_path)
    if (!patch(m.file, diff)) {
      results.push({ mutant: m.name, file: m.file, outcome: 'gone' })
      console.log(`gone     ${m.name} (the code it mutated changed)`)
      continue
    }
    try {
      const t = spawnSync('cargo', ['test', '--lib'], { cwd: root, stdio: 'ignore', env, timeout: 300_000 })
      const outcome = t.error ? 'timeout' : t.status === 0 ? 'missed' : 'caught'
      results.push({ mutant: m.name, file: m.file, outcome })
      console.log(`${outcome.padEnd(8)} ${m.name}`)
    } finally {
      patch(m.file, diff, true)
    }
  }
  writeFileSync(path.join(out, 'retest.json'), JSON.stringify(results, null, 2))
  const count = (o) => results.filter((r) => r.outcome === o).length
  console.log(`\n${count('caught')} caught now, ${count('timeout')} timed out, ${count('missed')} still missed, ${count('gone')} gone, of ${results.length}`)
  process.exit(0)
}
if (what === 'recheck') {
  const rust = JSON.parse(readFileSync(path.join(out, 'mutants.out', 'outcomes.json'), 'utf8'))
  const results = []
  const suites = (files) => {
    const built = spawnSync('npx', ['napi', 'build', '--platform', '--no-const-enum'], { cwd: root, stdio: 'ignore' }).status === 0
    return built && spawnSync('node', ['--test', ...files.map((f) => `__test__/${f}`)], { cwd: root, stdio: 'ignore', timeout: 600_000 }).status === 0
  }
  // The suites must pass unmutated, built as the mutants are (debug).
  for (const [file, files] of Object.entries(RECHECK)) {
    if (only && file !== only) continue
    if (!suites(files)) {
      console.error(`the suites of ${file} fail without a mutant: ${files.join(' ')}`)
      process.exit(1)
    }
  }
  for (const o of rust.outcomes) {
    if (o.summary !== 'MissedMutant') continue
    const m = o.scenario.Mutant
    const files = RECHECK[m.file]
    if (!files || !chosen(m)) continue
    const diff = path.join(out, 'mutants.out', o.diff_path)
    if (!patch(m.file, diff)) {
      console.log(`skipped  ${m.name} (the code changed since the run)`)
      continue
    }
    try {
      const caught = !suites(files)
      results.push({ mutant: m.name, caught })
      console.log(`${caught ? 'caught ' : 'MISSED '} ${m.name}`)
    } finally {
      patch(m.file, diff, true)
    }
  }
  writeFileSync(path.join(out, 'recheck.json'), JSON.stringify(results, null, 2))
  console.log(`\n${results.filter((r) => r.caught).length} of ${results.length} caught by the JS suites`)
  process.exit(0)
}
if (what === 'all' || what === 'lib') {
  const status = run('npx', ['--yes', '--package', STRYKER, 'stryker', 'run', 'scripts/stryker.config.json'])
  // In place: Stryker restores lib/ itself; a run cut short leaves its backup.
  if (status !== 0) console.error('Stryker failed: if lib/ was left mutated, git checkout lib/')
}
report()

function report() {
  const rows = new Map()
  const row = (file) => rows.get(file) ?? rows.set(file, { caught: 0, missed: [], timeout: 0, unviable: 0 }).get(file)
  const rust = path.join(out, 'mutants.out', 'outcomes.json')
  if (existsSync(rust)) {
    for (const o of JSON.parse(readFileSync(rust, 'utf8')).outcomes) {
      if (o.scenario === 'Baseline') continue
      const m = o.scenario.Mutant
      const r = row(m.file)
      const label = `${m.file}:${m.span.start.line}: ${m.name ?? describe(m)}`
      if (o.summary === 'CaughtMutant') r.caught++
      else if (o.summary === 'MissedMutant') r.missed.push(label)
      else if (o.summary === 'Timeout') r.timeout++
      else r.unviable++
    }
  }
  const lib = path.join(out, 'lib.json')
  if (existsSync(lib)) {
    for (const [file, f] of Object.entries(JSON.parse(readFileSync(lib, 'utf8')).files)) {
      const r = row(file)
      for (const m of f.mutants) {
        if (m.status === 'Killed') r.caught++
        else if (m.status === 'Survived' || m.status === 'NoCoverage') r.missed.push(`${file}:${m.location.start.line}: ${m.mutatorName} ${JSON.stringify(m.replacement ?? '')}`)
        else if (m.status === 'Timeout') r.timeout++
        else r.unviable++
      }
    }
  }
  if (rows.size === 0) return console.log('no mutation run yet')
  console.log('\nfile                          caught  timeout  missed  score (caught + timeout of viable)')
  for (const [file, r] of [...rows].sort()) {
    const viable = r.caught + r.timeout + r.missed.length
    const score = viable === 0 ? '-' : `${(((r.caught + r.timeout) / viable) * 100).toFixed(1)} %`
    console.log(`${file.padEnd(30)}${String(r.caught).padStart(6)}${String(r.timeout).padStart(9)}${String(r.missed.length).padStart(8)}  ${score}`)
  }
  const missed = [...rows.values()].flatMap((r) => r.missed)
  if (missed.length > 0) console.log(`\nsurvived:\n${missed.join('\n')}`)
}

/** A cargo-mutants mutant's description, from its parts. */
function describe(m) {
  const fn = m.function?.function_name ?? ''
  return `${fn}: replace ${m.replacement ?? ''}`.trim()
}
