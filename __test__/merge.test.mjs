import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { applyToText, applyToValue } from './support/merge-oracles.mjs'
import { MERGE_SOURCE, scriptArgs } from '../harness/scripts.mjs'
import { newId, rejectsWith, session, useRedis } from './support/setup.mjs'

const redis = useRedis()

// A merge is spliced in Rust and written back by compare-and-set; the
// server-side script (merge.lua) does it when that cannot be. Every semantic
// check below runs both: through the store, and through the script directly.
let mergeSha

/** Stores `text` raw, merges `paths` one way, returns the raw text after. */
async function mergeText(text, paths, via = 'store', ttl = 60_000) {
  const id = newId()
  await redis.admin.set(`sess:${id}`, text)
  if (via === 'store') {
    await redis.store().merge(id, paths, ttl)
  } else {
    mergeSha ??= await redis.admin.script('LOAD', MERGE_SOURCE)
    await redis.admin.evalsha(mergeSha, 1, `sess:${id}`, ...scriptArgs(ttl, paths))
  }
  return redis.admin.get(`sess:${id}`)
}

/** Checks the merge, both ways, against both oracles. */
async function check(text, paths, expected) {
  let after
  for (const via of ['store', 'script']) {
    after = await mergeText(text, paths, via)
    assert.deepEqual(JSON.parse(after), applyToValue(JSON.parse(text), paths), via)
    if (!/\s/.test(text.replace(/"(?:[^"\\]|\\.)*"/g, ''))) assert.equal(after, applyToText(text, paths), via)
    if (expected !== undefined) assert.equal(after, expected, via)
  }
  return after
}

describe('merge semantics', () => {
  it('sets, replaces and adds paths; new keys go last', async () => {
    await check('{"data":{"user":{"name":"Ada","id":7}},"meta":{"id":"x"}}', { 'data.user.name': 'Pascal', 'data.cart': [1, 2, 3], 'meta.expiresAt': 1763812345678 },
      '{"data":{"user":{"name":"Pascal","id":7},"cart":[1,2,3]},"meta":{"id":"x","expiresAt":1763812345678}}')
  })

  it('undefined removes the key (logout)', async () => {
    await check('{"data":{"userId":42,"theme":"dark"},"meta":{}}', { 'data.userId': undefined }, '{"data":{"theme":"dark"},"meta":{}}')
    await check('{"data":{"userId":42},"meta":{}}', { 'data.userId': undefined }, '{"data":{},"meta":{}}')
    await check('{"data":{"a":1,"userId":42},"meta":{}}', { 'data.userId': undefined }, '{"data":{"a":1},"meta":{}}')
    await check('{"data":{"a":1},"meta":{}}', { 'data.missing': undefined }, '{"data":{"a":1},"meta":{}}')
  })

  it('replaces the whole data object', async () => {
    await check('{"data":{"a":1,"b":[]},"meta":{"id":"x"}}', { data: { fresh: true } }, '{"data":{"fresh":true},"meta":{"id":"x"}}')
  })

  it('a missing, null or scalar intermediate becomes {}', async () => {
    await check('{"data":{}}', { 'data.a.b.c': 1 }, '{"data":{"a":{"b":{"c":1}}}}')
    await check('{"data":{"a":null}}', { 'data.a.b': 1 }, '{"data":{"a":{"b":1}}}')
    await check('{"data":{"a":"text"}}', { 'data.a.b': 1 }, '{"data":{"a":{"b":1}}}')
    await check('{"data":{"a":5}}', { 'data.a.b': undefined }, '{"data":{"a":{}}}')
  })

  it('addresses array elements by index', async () => {
    await check('{"data":{"items":[{"qty":1},{"qty":2}]}}', { 'data.items.1.qty': 5 }, '{"data":{"items":[{"qty":1},{"qty":5}]}}')
    await check('{"data":{"items":[1,2]}}', { 'data.items.4': 9 }, '{"data":{"items":[1,2,null,null,9]}}')
    await check('{"data":{"items":[]}}', { 'data.items.0': 'x' }, '{"data":{"items":["x"]}}')
    await check('{"data":{"items":[1,2,3]}}', { 'data.items.1': undefined }, '{"data":{"items":[1,null,3]}}')
    await check('{"data":{"items":[1]}}', { 'data.items.7': undefined }, '{"data":{"items":[1]}}')
    await check('{"data":{"items":[1]}}', { 'data.items.3.x': 1 }, '{"data":{"items":[1,null,null,{"x":1}]}}')
  })

  it('ignores a non-index segment on an array, as JSON.stringify would', async () => {
    for (const seg of ['length', 'foo', '01', '-1', '1e0', ' 1', '+1', '4294967295']) {
      await check('{"data":{"items":[1,2]}}', { [`data.items.${seg}`]: 9 }, '{"data":{"items":[1,2]}}')
    }
  })

  it('refuses to pad an array by more than 100000 nulls, and writes nothing', async () => {
    const id = newId()
    const text = '{"data":{"items":[]}}'
    await redis.admin.set(`sess:${id}`, text)
    await rejectsWith(redis.store().merge(id, { 'data.items.100001': 1 }, 1000), 'ERR_INVALID_ARG', 'array index')
    assert.equal(await redis.admin.get(`sess:${id}`), text)
  })

  it('writes values with JSON.stringify semantics', async () => {
    const date = new Date(Date.UTC(2026, 10, 22))
    const after = await check('{"data":{}}', { 'data.at': date, 'data.obj': { toJSON: () => 'custom' }, 'data.u': { a: undefined, b: 1 } })
    assert.equal(after, '{"data":{"at":"2026-11-22T00:00:00.000Z","obj":"custom","u":{"b":1}}}')
    // A value JSON has no text for (a function) removes the path, as undefined does.
    await check('{"data":{"f":1,"g":2}}', { 'data.f': () => 1 }, '{"data":{"g":2}}')
  })

  it('treats __proto__, constructor and prototype as ordinary keys', async () => {
    await check('{"data":{}}', { 'data.__proto__.polluted': true, 'data.constructor': 'c', 'data.prototype.x': 1 },
      '{"data":{"__proto__":{"polluted":true},"constructor":"c","prototype":{"x":1}}}')
    await check('{"data":{"__proto__":{"a":1}}}', { 'data.__proto__.a': undefined }, '{"data":{"__proto__":{}}}')
    const id = newId()
    await redis.store().set(id, session(id), 60_000)
    await redis.store().merge(id, { '__proto__.polluted': true, 'data.__proto__.x': 1 }, 60_000)
    const got = await redis.store().get(id)
    assert.equal(Object.getPrototypeOf(got), Object.prototype)
    assert.equal(Object.getPrototypeOf(got.data), Object.prototype)
    assert.equal(got.polluted, undefined)
    assert.equal({}.polluted, undefined)
  })

  it('matches keys written with escapes, and writes new keys as JSON.stringify does', async () => {
    await check('{"data":{"a\\/b":1,"\\u00e9t\\u00e9":2,"\\ud83d\\ude00":3,"q\\"k":4}}', { 'data.a/b': 10, 'data.été': 20, 'data.😀': 30, 'data.q"k': 40 },
      '{"data":{"a\\/b":10,"\\u00e9t\\u00e9":20,"\\ud83d\\ude00":30,"q\\"k":40}}')
    await check('{"data":{}}', { 'data.tab\there': 1, 'data.nl\n': 2, 'data.ctl\u0001': 3, 'data.back\\slash': 4, 'data.del\u007f': 5 },
      '{"data":{"tab\\there":1,"nl\\n":2,"ctl\\u0001":3,"back\\\\slash":4,"del\u007f":5}}')
  })

  it('an empty segment is an ordinary key', async () => {
    await check('{"data":{}}', { 'data.': 1, 'data..x': 2 }, '{"data":{"":{"x":2}}}')
  })

  it('duplicate keys: reads and replaces the last, removes all', async () => {
    for (const via of ['store', 'script']) {
      assert.equal(await mergeText('{"a":1,"a":2,"b":0}', { a: 3 }, via), '{"a":1,"a":3,"b":0}')
      assert.equal(await mergeText('{"a":1,"b":0,"a":2}', { a: undefined }, via), '{"b":0}')
      assert.equal(await mergeText('{"a":{"x":1},"a":{"y":1}}', { 'a.z': 1 }, via), '{"a":{"x":1},"a":{"y":1,"z":1}}')
      assert.equal(await mergeText('{"a":1,"b":{"a":2}}', { a: 3 }, via), '{"a":3,"b":{"a":2}}')
    }
  })

  it('nesting deeper than the client-side splice follows is merged by the server-side script', async () => {
    const deep = `{"data":{"deep":${'['.repeat(1200)}${']'.repeat(1200)},"n":1}}`
    const after = await mergeText(deep, { 'data.n': 2, 'data.m': [] })
    assert.equal(after, deep.replace('"n":1}}', '"n":2,"m":[]}}'))
  })

  it('sets the ttl', async () => {
    const id = newId()
    await redis.admin.set(`sess:${id}`, '{"data":{}}', 'PX', 1_000_000)
    await redis.store().merge(id, { 'data.a': 1 }, 5000)
    const pttl = await redis.admin.pttl(`sess:${id}`)
    assert.ok(pttl > 4000 && pttl <= 5000, `pttl ${pttl}`)
    await redis.store().merge(id, {}, 9000) // no paths: only the ttl changes
    assert.equal(await redis.admin.get(`sess:${id}`), '{"data":{"a":1}}')
    assert.ok((await redis.admin.pttl(`sess:${id}`)) > 8000)
  })

  it('does nothing, and creates nothing, when the session does not exist', async () => {
    const id = newId()
    await redis.store().merge(id, { 'data.a': 1, meta: { redirectTo: 'x' } }, 60_000)
    assert.equal(await redis.admin.exists(`sess:${id}`), 0)
  })
})

describe('merge after this store read the session', () => {
  // A store remembers the text it last read or wrote and splices into it;
  // the compare-and-set finds out when another writer came in between.
  it('applies the paths to what another writer stored since', async () => {
    const store = redis.store()
    const id = newId()
    await store.set(id, session(id, { a: 1 }), 60_000)
    await store.get(id)
    await redis.admin.set(`sess:${id}`, JSON.stringify(session(id, { a: 1, other: 'writer' })), 'PX', 60_000)
    await store.merge(id, { 'data.b': 2 }, 60_000)
    const s = await store.get(id)
    assert.equal(s.data.other, 'writer')
    assert.equal(s.data.b, 2)
    await store.merge(id, { 'data.c': 3 }, 60_000) // and again, on the text it wrote
    assert.deepEqual(Object.keys((await store.get(id)).data).slice(-3), ['other', 'b', 'c'])
  })

  it('does not bring back a session another store deleted', async () => {
    const [a, b] = [redis.store(), redis.store()]
    const id = newId()
    await a.set(id, session(id), 60_000)
    await a.get(id)
    await b.delete(id)
    await a.merge(id, { 'data.b': 2 }, 60_000)
    assert.equal(await redis.admin.exists(`sess:${id}`), 0)
  })

  it('reads afresh when the stored text became corrupt', async () => {
    const store = redis.store()
    const id = newId()
    await store.set(id, session(id), 60_000)
    await store.get(id)
    await redis.admin.set(`sess:${id}`, '{"data":', 'PX', 60_000)
    await rejectsWith(store.merge(id, { 'data.b': 2 }, 60_000), 'ERR_CORRUPT_SESSION')
    assert.equal(await redis.admin.get(`sess:${id}`), '{"data":')
  })
})

describe('merge keeps untouched bytes', () => {
  it('keeps empty arrays, every digit, cjson spellings and escapes', async () => {
    // As JSON.stringify writes it, and as the JS adapter's cjson writes it.
    const stored =
      '{"data":{"cart":[],"big":9007199254740993,"pi":0.30000000000000004,"huge":1e+300,"neg":-0,"cj":9.007199254741e+15,' +
      '"url":"https:\\/\\/example.com\\/x","uni":"\\u00e9\\ud83d\\ude00","raw":"é😀","esc":"tab\\tnl\\n\\"q\\"","e":{}},' +
      '"meta":{"id":"x","createdAt":1763812345678}}'
    const after = await check(stored, { 'data.user.name': 'Pascal', 'meta.expiresAt': 1763812999999 })
    assert.equal(
      after,
      stored.replace(',"e":{}}', ',"e":{},"user":{"name":"Pascal"}}').replace('1763812345678}}', '1763812345678,"expiresAt":1763812999999}}'),
    )
  })

  it('keeps white space and key order of pretty-printed text', async () => {
    const stored = JSON.stringify({ z: 1, data: { cart: [], b: [1, { c: 2 }] }, a: 'x' }, null, 2)
    const after = await check(stored, { 'data.b.1.c': 3, 'data.cart': undefined })
    assert.equal(after, stored.replace('"c": 2', '"c": 3').replace('\n    "cart": [],', ''))
  })

  it('a touched path after a large sibling leaves the sibling as it was', async () => {
    const cart = Array.from({ length: 400 }, (_, i) => ({ sku: `SKU-${i}`, qty: i % 5, price: i * 1.1, note: 'a "quoted" \\ note /' }))
    const stored = JSON.stringify({ data: { cart, recentlyViewed: [] }, meta: { id: 'x' } })
    const after = await check(stored, { 'data.recentlyViewed': [1, 2] })
    assert.equal(after, stored.replace('"recentlyViewed":[]', '"recentlyViewed":[1,2]'))
  })
})

describe('merge of stored text that is not a JSON object', () => {
  const cases = {
    'truncated JSON': '{"data":{"a":1}',
    'an array at the root': '[1,2,3]',
    'a string at the root': '"text"',
    'a trailing comma': '{"a":1,}',
    'text after the object': '{"a":1} x',
    'a bad escape': '{"a":"\\x"}',
    'a raw control character': '{"a":"line\nbreak"}',
    'a bad number': '{"a":01}',
    'NaN': '{"a":NaN}',
    'single quotes': "{'a':1}",
    'an unquoted key': '{a:1}',
    'an empty value': '',
  }
  for (const [name, text] of Object.entries(cases)) {
    it(`rejects ${name} with ERR_CORRUPT_SESSION and leaves it as it was`, async () => {
      const id = newId()
      await redis.admin.set(`sess:${id}`, text, 'PX', 600_000)
      await rejectsWith(redis.store().merge(id, { 'data.a': 2 }, 1000), 'ERR_CORRUPT_SESSION', 'not a JSON object')
      mergeSha ??= await redis.admin.script('LOAD', MERGE_SOURCE)
      await assert.rejects(redis.admin.evalsha(mergeSha, 1, `sess:${id}`, ...scriptArgs(1000, { 'data.a': 2 })), /^ReplyError: ERR_CORRUPT_SESSION stored session is not a JSON object/)
      assert.equal(await redis.admin.get(`sess:${id}`), text)
      assert.ok((await redis.admin.pttl(`sess:${id}`)) > 500_000, 'the ttl changed')
    })
  }
})
