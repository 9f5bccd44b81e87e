// The scripts' SHA1s, as Redis names them, for tests that look into the script cache.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'

const sha = (name) => createHash('sha1').update(readFileSync(new URL(`../../lua/${name}`, import.meta.url))).digest('hex')
export const MERGE_SHA = sha('merge.lua')
export const UNLOCK_SHA = sha('unlock.lua')
