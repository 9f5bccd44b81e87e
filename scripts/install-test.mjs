#!/usr/bin/env node
// `npm run test:install`: the install a user makes, through a throwaway npm
// registry on 127.0.0.1 (verdaccio from the npm registry, got once into
// .runtimes/verdaccio/, its storage in a temporary folder). Publishes as the
// workflow does: `napi pre-publish` publishes every platform package built
// here (npm/<platform>/ with the binaries of `npm run build:release`) and
// names each in the main package's optionalDependencies, then the main
// package is published. Then: for each of those platforms, `npm install
// relay-session-redis --os --cpu --libc` in a fresh app installs its package
// and no other; and for this machine's, in a fresh app: require, import,
// `tsc --strict` against the types (a store typed as relay-session's
// SessionStoreAdapter), a store round trip against a throwaway server, and,
// with optional dependencies omitted, that loading fails with
// ERR_NATIVE_BINDING naming the platform and the two ways out. Prints each
// step's time.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { freePort, startRedis } from '../harness/redis-server.mjs'
import { checkBinary, TARGETS, unpackedPackage } from './build-release.mjs'
import { npmToolOnce } from '../harness/tools.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'))
// This machine's platform, where the installed package is also loaded and used.
const PLATFORM = 'linux-x64-gnu'
const BINARY = `relay-session-redis.${PLATFORM}.node`
// The platform packages built here, all published.
const HERE = TARGETS.filter((t) => t.here)
// 6.x needs Node 22; 5.33 runs on every Node this package supports.
const VERDACCIO = '5.33.0'
const work = mkdtempSync(path.join(tmpdir(), 'rsr-install-'))
const timings = []

/** Runs `title`'s step, timed. */
async function step(title, run) {
  const t0 = Date.now()
  try {
    return await run()
  } finally {
    timings.push([title, Date.now() - t0])
  }
}

const sh = (cmd, args, opts = {}) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts })

/** verdaccio, got once; its dependencies name node-fetch by a dist-tag (cjs) that is pinned here. */
const verdaccioBin = () => npmToolOnce('verdaccio', 'verdaccio', { verdaccio: VERDACCIO }, { 'node-fetch': '2.7.0' })

let registry
let server
let failed = false
try {
  for (const target of HERE) {
    const binary = path.join(root, 'npm', target.platform, target.binary)
    if (!existsSync(binary)) throw new Error(`npm/${target.platform}/${target.binary} is missing: run npm run build:release first`)
    console.log(`${target.binary}: ${checkBinary(binary, target)}`)
  }

  const url = await step('start verdaccio (storage in a temporary folder)', async () => {
    const bin = verdaccioBin()
    const port = await freePort()
    const config = path.join(work, 'verdaccio.yaml')
    writeFileSync(config, [
      `storage: ${path.join(work, 'storage')}`,
      'auth: { htpasswd: { file: ./htpasswd, max_users: -1 } }',
      'uplinks: {}',
      "packages: { '**': { access: $all, publish: $all } }",
      'log: { type: stdout, level: error }',
      '',
    ].join('\n'))
    registry = spawn(bin, ['--config', config, '--listen', `127.0.0.1:${port}`], { stdio: 'ignore' })
    const url = `http://127.0.0.1:${port}/`
    for (let i = 0; i < 200; i++) {
      try {
        if ((await fetch(`${url}-/ping`)).ok) return url
      } catch {}
      await sleep(50)
    }
    throw new Error('verdaccio did not start')
  })
  // npm wants a token for publishing; verdaccio lets anyone publish here.
  const npmrc = path.join(work, 'npmrc')
  writeFileSync(npmrc, `registry=${url}\n//${url.slice('http://'.length)}:_authToken=throwaway\n`)
  const npmEnv = { ...process.env, npm_config_userconfig: npmrc, npm_config_registry: url, npm_config_cache: path.join(work, 'cache') }

  await step(`napi pre-publish (${HERE.map((t) => t.platform).join(', ')}), then npm publish relay-session-redis ${pkg.version}`, () => {
    // The main package as npm packs it, with the platform packages beside it,
    // napi.targets narrowed to the ones built here (the workflow has them all).
    const stage = path.join(work, 'stage')
    unpackedPackage(stage, work)
    for (const target of HERE) cpSync(path.join(root, 'npm', target.platform), path.join(stage, 'npm', target.platform), { recursive: true })
    const staged = JSON.parse(readFileSync(path.join(stage, 'package.json'), 'utf8'))
    staged.napi.targets = HERE.map((t) => t.triple)
    writeFileSync(path.join(stage, 'package.json'), JSON.stringify(staged, null, 2))
    // pre-publish works inside a git work tree, as in the workflow's checkout.
    sh('git', ['init', '-q'], { cwd: stage })
    sh('git', ['add', '-A'], { cwd: stage })
    sh('git', ['-c', 'user.name=install-test', '-c', 'user.email=install-test@localhost', 'commit', '-q', '-m', 'stage'], { cwd: stage })
    sh(path.join(root, 'node_modules', '.bin', 'napi'), ['pre-publish', '-t', 'npm'], { cwd: stage, env: npmEnv })
    const manifest = JSON.parse(readFileSync(path.join(stage, 'package.json'), 'utf8'))
    const named = Object.keys(manifest.optionalDependencies ?? {}).sort()
    const wanted = HERE.map((t) => `relay-session-redis-${t.platform}`).sort()
    if (JSON.stringify(named) !== JSON.stringify(wanted)) throw new Error(`optionalDependencies name ${named.join(', ')}; expected ${wanted.join(', ')}`)
    for (const [name, version] of Object.entries(manifest.optionalDependencies)) if (version !== pkg.version) throw new Error(`${name}@${version} is not ${pkg.version}`)
    console.log(`optionalDependencies: ${named.join(', ')}`)
    if (existsSync(path.join(stage, BINARY))) throw new Error('the main package ships a .node')
    sh('npm', ['publish', '--registry', url], { cwd: stage, env: npmEnv })
  })

  for (const target of HERE) {
    const { os, cpu, libc } = target
    await step(`npm install --os ${os} --cpu ${cpu} --libc ${libc}: relay-session-redis-${target.platform} and no other`, () => {
      const app = path.join(work, `app-${target.platform}`)
      mkdirSync(app)
      writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, version: '1.0.0' }))
      sh('npm', ['install', '--no-audit', '--no-fund', '--os', os, '--cpu', cpu, '--libc', String(libc), 'relay-session-redis'], { cwd: app, env: npmEnv })
      const got = readdirSync(path.join(app, 'node_modules')).filter((n) => n.startsWith('relay-session-redis-'))
      if (JSON.stringify(got) !== JSON.stringify([`relay-session-redis-${target.platform}`])) throw new Error(`installed ${got.join(', ') || 'no platform package'}`)
      if (!existsSync(path.join(app, 'node_modules', got[0], target.binary))) throw new Error(`${got[0]} has no ${target.binary}`)
    })
  }

  const app = path.join(work, 'app')
  await step('npm install relay-session-redis in a fresh app', () => {
    mkdirSync(app)
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, version: '1.0.0' }))
    sh('npm', ['install', '--no-audit', '--no-fund', 'relay-session-redis'], { cwd: app, env: npmEnv })
    if (!existsSync(path.join(app, 'node_modules', `relay-session-redis-${PLATFORM}`, BINARY))) throw new Error('the platform package was not installed')
  })

  server = await startRedis()
  const ROUND_TRIP = `
    const id = 'installed'.repeat(8)
    await store.set(id, { data: { cart: [] }, meta: { id, createdAt: 1, expiresAt: 2 } }, 60000)
    await store.merge(id, { 'data.n': 1 }, 60000)
    const got = await store.get(id)
    if (JSON.stringify(got.data) !== '{"cart":[],"n":1}') throw new Error('round trip: ' + JSON.stringify(got))
    await store.close()
    console.log('ok')`
  await step('require() and a store round trip', () => {
    writeFileSync(path.join(app, 'cjs.cjs'), `const { createRedisSessionStore } = require('relay-session-redis')
      ;(async () => { const store = createRedisSessionStore({ url: '${server.url}' }); ${ROUND_TRIP} })()`)
    if (sh(process.execPath, ['cjs.cjs'], { cwd: app }).trim() !== 'ok') throw new Error('require failed')
  })
  await step('import and a store round trip', () => {
    writeFileSync(path.join(app, 'esm.mjs'), `import { createRedisSessionStore } from 'relay-session-redis'
      const store = createRedisSessionStore({ url: '${server.url}' }); ${ROUND_TRIP}`)
    if (sh(process.execPath, ['esm.mjs'], { cwd: app }).trim() !== 'ok') throw new Error('import failed')
  })
  const deno = path.join(root, '.runtimes', 'runtimes', 'node_modules', '.bin', 'deno')
  // `npm test` installs Deno first (`npm run test:runtimes`); run alone,
  // this test says so rather than leave Deno out without a word.
  if (!existsSync(deno) && process.env.INSTALL_TEST_WITHOUT_DENO !== '1') {
    throw new Error('Deno is not installed here: run `npm run test:runtimes` first (it installs it), or set INSTALL_TEST_WITHOUT_DENO=1 to leave Deno out')
  }
  if (existsSync(deno)) {
    await step('Deno: npm:relay-session-redis from the registry, and a store round trip', () => {
      writeFileSync(path.join(work, 'deno.mjs'), `import { createRedisSessionStore } from 'npm:relay-session-redis@${pkg.version}'
        const store = createRedisSessionStore({ url: '${server.url}' }); ${ROUND_TRIP}`)
      // Just published: past Deno's minimum-age policy for npm versions.
      const out = sh(deno, ['run', '--allow-all', '--node-modules-dir=none', '--minimum-dependency-age=0', path.join(work, 'deno.mjs')], {
        cwd: work,
        env: { ...process.env, NPM_CONFIG_REGISTRY: url, DENO_DIR: path.join(work, 'deno'), NO_COLOR: '1' },
      })
      if (out.trim() !== 'ok') throw new Error(`Deno: ${out}`)
    })
  }
  await step('tsc --strict against the installed types', () => {
    writeFileSync(path.join(app, 'app.ts'), readFileSync(path.join(root, '__test__', 'types.ts'), 'utf8').replace("'../store.js'", "'relay-session-redis'"))
    writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', types: ['node'], typeRoots: [path.join(root, 'node_modules', '@types')] },
      files: ['app.ts'],
    }))
    sh(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: app })
  })
  await step('npm install --omit=optional: loading names the platform and the two ways out', () => {
    const bare = path.join(work, 'bare')
    mkdirSync(bare)
    writeFileSync(path.join(bare, 'package.json'), JSON.stringify({ name: 'bare', private: true, version: '1.0.0' }))
    sh('npm', ['install', '--no-audit', '--no-fund', '--omit=optional', 'relay-session-redis'], { cwd: bare, env: npmEnv })
    const r = spawnSync(process.execPath, ['-e', "try { require('relay-session-redis') } catch (e) { console.log(e.code + ': ' + e.message) }"], { cwd: bare, encoding: 'utf8' })
    const said = r.stdout.trim()
    for (const part of ['ERR_NATIVE_BINDING', PLATFORM, `npm install relay-session-redis-${PLATFORM}`, 'build the addon from source']) {
      if (!said.includes(part)) throw new Error(`the load error does not say "${part}": ${said}`)
    }
    console.log(`without the platform package: ${said}`)
  })
} catch (e) {
  failed = true
  console.error(`install test failed: ${e.stack ?? e}${e.stderr ? `\n${e.stderr}` : ''}`)
} finally {
  registry?.kill()
  await server?.stop()
  rmSync(work, { recursive: true, force: true })
}
console.log(['| step | time |', '|---|---|', ...timings.map(([t, ms]) => `| ${t} | ${(ms / 1000).toFixed(1)} s |`)].join('\n'))
process.exit(failed ? 1 : 0)
