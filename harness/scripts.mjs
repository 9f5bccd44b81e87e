// The scripts' SHA1s, as Redis names them, for tests that look into the script cache.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

const { limits } = createRequire(import.meta.url)('../store.js')

const source = (name) => readFileSync(new URL(`../lua/${name}`, import.meta.url), 'utf8')
const sha = (name) => createHash('sha1').update(source(name)).digest('hex')
export const MERGE_SOURCE = source('merge.lua')
export const MERGE_SHA = sha('merge.lua')
export const SWAP_SHA = sha('swap.lua')
export const UNLOCK_SHA = sha('unlock.lua')

/**
 * merge.lua's arguments for a paths object, as the store sends them: ttl, the
 * longest text it takes on (0: any), the padding limit, then (path, value
 * JSON) pairs ('' removes).
 */
export const scriptArgs = (ttl, paths, maxBytes = 0) => [
  ttl,
  maxBytes,
  limits.MAX_PADDING,
  ...Object.entries(paths).flatMap(([p, v]) => [p, v === undefined ? '' : (JSON.stringify(v) ?? '')]),
]
