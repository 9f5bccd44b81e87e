// Differential fuzz of merge: random documents, written with the spellings of
// JSON.stringify and of cjson (escaped slashes, \u escapes, 1e+300, -0, long
// numbers), and random path sets; the stored text after the merge must equal
// both oracles. FUZZ_CASES and FUZZ_SEED change the run.
import assert from 'node:assert/strict'
import { it } from 'node:test'
import { Redis } from 'ioredis'
import { createJsAdapter } from '../harness/js-adapter.mjs'
import { applyToText, applyToValue } from './support/merge-oracles.mjs'
import { MERGE_SOURCE, scriptArgs } from '../harness/scripts.mjs'
import { newId, useRedis } from './support/setup.mjs'
import { seeded } from './support/random.mjs'

const CASES = Number(process.env.FUZZ_CASES ?? 5000)
const SEED = Number(process.env.FUZZ_SEED ?? 0x5e5510)

const redis = useRedis()

const { rnd, int, pick } = seeded(SEED)
const chance = (p) => rnd() < p

const KEYS = ['a', 'b', 'c', '{', 'k]', 'user', 'cart', 'name', 'id', '0', '1', '10', '__proto__', 'constructor', 'é', '😀', 'k"q', 'sl/ash', 'back\\s', 'tab\t', 'ctl\u0001', '', 'Ünï', '日本']
const DOC_ONLY_KEYS = ['dot.ted', 'x.0']
const NUMBERS = ['0', '-0', '1', '-1', '42', '9007199254740993', '12345678901234567890', '0.30000000000000004', '1e+300', '1E5', '2.5e-7', '-3.14', '9.007199254741e+15', '1.0', '100', '1763812345678']
const STRINGS = ['', 'x', 'Ada Lovelace', 'a/b/c', 'quote"inside', 'back\\slash', 'line\nbreak', 'tab\there', 'ctl\u0001\u001f', 'é', 'naïve café', '😀 emoji', '日本語', '\u2028\u2029', 'https://example.com/x?y=1', '{', '}', '[x]', 'a]b}c', '{"json":"in a string"}', '\\"']

/** A string as JSON text, with cjson-like and escape-happy spellings at random. */
function emitString(s) {
  let out = '"'
  for (const ch of s) {
    const code = ch.codePointAt(0)
    const units = ch.length === 2 ? [ch.charCodeAt(0), ch.charCodeAt(1)] : [code]
    const u = () => units.map((c) => '\\u' + c.toString(16).padStart(4, '0')[chance(0.5) ? 'toUpperCase' : 'toLowerCase']()).join('')
    if (ch === '"' || ch === '\\' || code < 0x20) {
      const short = { '"': '\\"', '\\': '\\\\', '\n': '\\n', '\t': '\\t', '\r': '\\r', '\b': '\\b', '\f': '\\f' }[ch]
      out += short && chance(0.8) ? short : u()
    } else if (ch === '/' && chance(0.5)) out += '\\/'
    else if (code > 0x7e && chance(0.4)) out += u()
    else if (chance(0.03)) out += u()
    else out += ch
  }
  return out + '"'
}

/** Random JSON text of depth at most 4. */
function emitValue(depth) {
  const r = rnd()
  if (depth < 4 && r < 0.25) return emitObject(depth + 1)
  if (depth < 4 && r < 0.45) {
    const n = chance(0.25) ? 0 : int(6)
    return '[' + Array.from({ length: n }, () => emitValue(depth + 1)).join(',') + ']'
  }
  if (r < 0.65) return emitString(pick(STRINGS))
  if (r < 0.85) return chance(0.6) ? pick(NUMBERS) : String(chance(0.5) ? int(1e6) : (rnd() - 0.5) * 10 ** int(20))
  return pick(['true', 'false', 'null'])
}

function emitObject(depth, keys = null) {
  const chosen = keys ?? [...new Set(Array.from({ length: chance(0.15) ? 0 : 1 + int(5) }, () => (chance(0.9) ? pick(KEYS) : pick(DOC_ONLY_KEYS))))]
  return '{' + chosen.map((k) => emitString(k) + ':' + (k === 'data' ? emitObject(1) : emitValue(depth))).join(',') + '}'
}

/** A random JS value as the middleware would pass it. */
function randomValue(depth = 0) {
  const r = rnd()
  if (r < 0.2) return undefined
  if (depth < 3 && r < 0.35) {
    const o = {}
    for (let i = int(4); i > 0; i--) {
      Object.defineProperty(o, pick(KEYS), { value: randomValue(depth + 1), enumerable: true, writable: true, configurable: true })
    }
    return o
  }
  if (depth < 3 && r < 0.5) return Array.from({ length: int(4) }, () => randomValue(depth + 1))
  if (r < 0.65) return pick(STRINGS)
  if (r < 0.8) return pick([0, -0, 1, 0.1 + 0.2, 2 ** 53 + 2, 1e21, -1.5e-7, NaN, Infinity, int(1e9)])
  if (r < 0.85) return new Date(Date.UTC(2026, int(12), 1 + int(28)))
  return pick([true, false, null])
}

/** Segments of a random path, mostly through the document's real members. */
function randomPath(doc) {
  const segs = []
  let node = doc
  const depth = 1 + int(4)
  for (let d = 0; d < depth; d++) {
    let seg
    if (Array.isArray(node)) {
      seg = chance(0.85) ? String(int(node.length + 2)) : pick(['x', '01', 'length', '-1'])
    } else if (node && typeof node === 'object' && chance(0.75)) {
      const keys = Object.keys(node).filter((k) => !k.includes('.'))
      seg = keys.length ? pick(keys) : pick(KEYS)
    } else seg = pick(KEYS)
    segs.push(seg)
    if (node && typeof node === 'object') node = Object.prototype.hasOwnProperty.call(node, seg) ? node[seg] : undefined
    else node = undefined
  }
  return segs
}

const related = (a, b) => {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false
  return true // one is a prefix of the other (or equal)
}

function randomCase() {
  const text = chance(0.7) ? emitObject(0, ['data', 'meta']) : emitObject(0)
  const doc = JSON.parse(text)
  const chosen = []
  for (let i = 1 + int(4); i > 0; i--) {
    const segs = randomPath(doc)
    // A path of one empty segment is the empty key, which merge refuses.
    if (segs.join('.') !== '' && !chosen.some((c) => related(c, segs))) chosen.push(segs)
  }
  const paths = {}
  for (const segs of chosen) {
    Object.defineProperty(paths, segs.join('.'), { value: randomValue(), enumerable: true, writable: true, configurable: true })
  }
  return { text, paths }
}

it(`merge equals both oracles on ${CASES} random documents (seed ${SEED}), in Rust and in the server-side script`, async (t) => {
  const store = redis.store()
  const mergeSha = await redis.admin.script('LOAD', MERGE_SOURCE)
  const cjsonClient = new Redis({ port: redis.server.port, host: '127.0.0.1' })
  const cjson = createJsAdapter(cjsonClient, { prefix: 'cjson:' })
  t.after(() => cjsonClient.disconnect())
  const cases = Array.from({ length: CASES }, randomCase)
  const mismatches = []
  let adapterWrong = 0
  let adapterErrors = 0
  const stats = { paths: 0, removals: 0, bytes: 0 }
  for (let start = 0; start < cases.length; start += 50) {
    await Promise.all(
      cases.slice(start, start + 50).map(async ({ text, paths }, j) => {
        const n = start + j
        const id = newId()
        stats.paths += Object.keys(paths).length
        stats.removals += Object.values(paths).filter((v) => v === undefined).length
        stats.bytes += text.length
        await redis.admin.set(`sess:${id}`, text)
        await redis.admin.set(`lua:${id}`, text)
        await redis.admin.set(`cjson:${id}`, text)
        const expectedValue = applyToValue(JSON.parse(text), paths)
        const expectedText = applyToText(text, paths)
        try {
          await store.merge(id, paths, 60_000)
          const after = await redis.admin.get(`sess:${id}`)
          if (after !== expectedText) throw new Error(`text differs:\n  got      ${after}\n  expected ${expectedText}`)
          assert.deepStrictEqual(JSON.parse(after), expectedValue)
        } catch (e) {
          mismatches.push(`case ${n} (store): stored ${text}\n  paths ${JSON.stringify(Object.entries(paths))}\n  ${e.message}`)
        }
        try {
          await redis.admin.evalsha(mergeSha, 1, `lua:${id}`, ...scriptArgs(60_000, paths))
          const after = await redis.admin.get(`lua:${id}`)
          if (after !== expectedText) throw new Error(`text differs:\n  got      ${after}\n  expected ${expectedText}`)
        } catch (e) {
          mismatches.push(`case ${n} (merge.lua): stored ${text}\n  paths ${JSON.stringify(Object.entries(paths))}\n  ${e.message}`)
        }
        try {
          await cjson.merge(id, paths, 60_000)
          const after = await redis.admin.get(`cjson:${id}`)
          if (after !== expectedText) adapterWrong++
        } catch {
          adapterErrors++
        }
        await redis.admin.del(`sess:${id}`, `lua:${id}`, `cjson:${id}`)
      }),
    )
  }
  t.diagnostic(`cases ${CASES}, paths ${stats.paths} (removals ${stats.removals}), stored bytes ${stats.bytes}, seed ${SEED}`)
  t.diagnostic(`mismatches: ${mismatches.length}`)
  t.diagnostic(`cjson JS adapter on the same cases: ${adapterWrong} results differ, ${adapterErrors} errors`)
  assert.equal(mismatches.length, 0, mismatches.slice(0, 3).join('\n\n'))
})
