// The JavaScript adapter this addon replaces, written from the store contract:
// ioredis plus a Lua merge script that cjson-decodes the stored session,
// applies the paths and cjson-encodes it back. The tests use it for interop,
// the benchmarks as the baseline.
const MERGE_LUA = `
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local doc = cjson.decode(raw)
for i = 2, #ARGV, 2 do
  local segs = {}
  for seg in string.gmatch(ARGV[i], '[^.]+') do segs[#segs + 1] = seg end
  local node = doc
  for j = 1, #segs - 1 do
    local k = segs[j]
    if #node > 0 and tonumber(k) then k = tonumber(k) + 1 end
    if type(node[k]) ~= 'table' then node[k] = {} end
    node = node[k]
  end
  local last = segs[#segs]
  if #node > 0 and tonumber(last) then last = tonumber(last) + 1 end
  if ARGV[i + 1] == '' then node[last] = nil else node[last] = cjson.decode(ARGV[i + 1]) end
end
redis.call('SET', KEYS[1], cjson.encode(doc), 'PX', ARGV[1])
return 1
`

/**
 * @param {import('ioredis').Redis} redis
 * @param {{prefix?: string, lockPrefix?: string, preloadScript?: boolean}} [options]
 */
export function createJsAdapter(redis, options = {}) {
  const prefix = options.prefix ?? 'sess:'
  const lockPrefix = options.lockPrefix ?? 'lock:'
  const key = (id) => prefix + id
  const lockKey = (id) => prefix + lockPrefix + id
  if (!redis.sessionMerge) redis.defineCommand('sessionMerge', { numberOfKeys: 1, lua: MERGE_LUA })
  if (options.preloadScript) redis.script('LOAD', MERGE_LUA).catch(() => {})
  return {
    async get(id) {
      const raw = await redis.get(key(id))
      return raw === null ? null : JSON.parse(raw)
    },
    async set(id, data, ttlMs) {
      await redis.set(key(id), JSON.stringify(data), 'PX', Math.ceil(ttlMs))
    },
    async delete(id) {
      await redis.del(key(id))
    },
    async merge(id, paths, ttlMs) {
      const args = []
      for (const [path, value] of Object.entries(paths)) args.push(path, value === undefined ? '' : JSON.stringify(value))
      await redis.sessionMerge(key(id), Math.ceil(ttlMs), ...args)
    },
    async lock(id, ttlMs) {
      return (await redis.set(lockKey(id), '1', 'PX', Math.ceil(ttlMs), 'NX')) === 'OK'
    },
    async unlock(id) {
      await redis.del(lockKey(id))
    },
    async isLocked(id) {
      return (await redis.exists(lockKey(id))) === 1
    },
  }
}
