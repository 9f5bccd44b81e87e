import { Redis } from 'ioredis'
import { readFileSync } from 'node:fs'
import { makeSession } from './sessions.mjs'
const r = new Redis({ port: 6399 })
const doc = JSON.stringify(makeSession('x', 32768))
const doc2 = doc.replace('"Ada Lovelace"', '"Ada Lovelacf"')
const swap = await r.script('LOAD', readFileSync('lua/swap.lua', 'utf8'))
const noop = await r.script('LOAD', 'return 1')
const getonly = await r.script('LOAD', "local v = redis.call('GET', KEYS[1]) return 1")
const cmp = await r.script('LOAD', "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end return 1")
async function t(name, f) { await r.config('RESETSTAT'); for (let i = 0; i < 300; i++) await f(i); const s = await r.info('commandstats'); console.log(name, s.split('\n').filter(l => /evalsha|cmdstat_set:/.test(l)).map(l => l.split(':')[0] + ' ' + l.match(/usec_per_call=([\d.]+)/)[1]).join('  ')) }
await r.set('k', doc)
await t('set 32KB       ', () => r.set('k', doc))
await t('noop + 64KB args', () => r.evalsha(noop, 1, 'k', doc, doc2, 60000))
await t('get only       ', () => r.evalsha(getonly, 1, 'k'))
await t('get + compare  ', () => r.evalsha(cmp, 1, 'k', doc))
await t('swap           ', async (i) => { const [a, b] = i % 2 ? [doc2, doc] : [doc, doc2]; await r.evalsha(swap, 1, 'k', a, b, 60000) })
r.disconnect()
