-- A user's index of session ids (`userIdPath`): a sorted set whose members
-- are session ids and whose scores bound, in ms of the server's clock, when
-- each session expires. The key expires with its highest score, so an index
-- never outlives the bound of its last session. Entries whose bound has
-- passed are removed here (their sessions have expired): at most 100 by an
-- 'add', at most 1,000 by a 'prune', so that no call holds the server long.
-- KEYS[1]  the user's index key
-- ARGV[1]  'add': ARGV[2] the session id, ARGV[3] its ttl plus the call
--          bound plus a headroom, in ms (the session is written after this,
--          within the call bound, so it expires before the bound written
--          here; the headroom spares later writes a renewal: store/users.rs).
--          'prune': only the removal of passed entries.
-- Replies (an 'add') with the server's clock when it added the entry, in ms:
-- the write after it expires at that time plus its ttl (PXAT), so that it
-- ends before the entry however late it is applied; or (a 'prune') 1 when
-- passed entries remain beyond those removed, to prune again, else 0.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = 100
if ARGV[1] == 'prune' then
  limit = 1000
end
local passed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, limit)
if #passed > 0 then
  redis.call('ZREM', KEYS[1], unpack(passed))
end
if ARGV[1] == 'prune' then
  return #redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, 1)
end
if ARGV[1] == 'add' then
  local bound = now + tonumber(ARGV[3])
  local old = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]))
  if old == nil or old < bound then
    redis.call('ZADD', KEYS[1], string.format('%.0f', bound), ARGV[2])
  end
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIREAT', KEYS[1], last[2])
end
return now
