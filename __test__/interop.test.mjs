// Side by side with the JS adapter on one Redis, as during a migration.
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { Redis } from 'ioredis'
import { createJsAdapter } from '../harness/js-adapter.mjs'
import { applyToText } from './support/merge-oracles.mjs'
import { newId, session, useRedis } from './support/setup.mjs'

const redis = useRedis()
let client
let js
let native

before(async () => {
  await redis.ready()
  client = new Redis({ host: '127.0.0.1', port: redis.server.port })
  js = createJsAdapter(client)
  native = redis.store()
})
after(() => client?.disconnect())

describe('interop with the JS adapter', () => {
  it('each reads what the other wrote', async () => {
    const [a, b] = [newId(), newId()]
    await js.set(a, session(a, { from: 'js' }), 60_000)
    await native.set(b, session(b, { from: 'native' }), 60_000)
    assert.deepEqual(await native.get(a), session(a, { from: 'js' }))
    assert.deepEqual(await js.get(b), session(b, { from: 'native' }))
  })

  it('the native store merges documents the JS adapter wrote and merged (cjson text), keeping their bytes', async () => {
    const id = newId()
    await js.set(id, session(id, { url: 'https://example.com/a', big: 1.5e300 }), 60_000)
    await js.merge(id, { 'data.user.name': 'Pascal' }, 60_000) // cjson rewrites the whole text
    const cjsonText = await redis.admin.get(`sess:${id}`)
    assert.ok(cjsonText.includes('\\/'), cjsonText) // cjson's escaped slashes
    const paths = { 'data.theme': 'dark', 'data.user.id': undefined }
    await native.merge(id, paths, 60_000)
    const after = await redis.admin.get(`sess:${id}`)
    assert.equal(after, applyToText(cjsonText, paths))
    assert.ok(after.includes('"https:\\/\\/example.com\\/a"'), 'cjson spelling kept')
  })

  it('the JS adapter merges documents the native store wrote', async () => {
    const id = newId()
    await native.set(id, session(id), 60_000)
    await native.merge(id, { 'data.user.name': 'Grace' }, 60_000)
    await js.merge(id, { 'data.flags.beta': false }, 60_000)
    const s = await native.get(id)
    assert.equal(s.data.user.name, 'Grace')
    assert.equal(s.data.flags.beta, false)
  })

  it('their locks exclude each other', async () => {
    const id = newId()
    assert.equal(await js.lock(id, 5000), true)
    assert.equal(await native.lock(id, 5000), false)
    assert.equal(await native.isLocked(id), true)
    await js.unlock(id)
    assert.equal(await native.lock(id, 5000), true)
    assert.equal(await js.lock(id, 5000), false)
    assert.equal(await js.isLocked(id), true)
    await native.unlock(id)
    assert.equal(await js.isLocked(id), false)
  })

  it('use the same keys', async () => {
    const id = newId()
    await native.set(id, session(id), 60_000)
    await native.lock(id, 5000)
    assert.deepEqual((await redis.admin.keys(`*${id}`)).sort(), [`sess:${id}`, `sess:lock:${id}`])
    await js.delete(id)
    assert.equal(await native.get(id), null)
    await native.unlock(id)
  })
})
