-- Compare and set: writes the merged session only if the stored text is still
-- the one the merge was computed from (the store splices paths into the text it
-- read; see src/splice.rs). Otherwise the store falls back to merge.lua.
-- KEYS[1]  the session key
-- ARGV[1]  the text read;  ARGV[2]  the text to write;  ARGV[3]  the expiry:
-- ms from now, or (ARGV[4] 'PXAT') a time on the server's clock in ms
-- ARGV[4]  'PX' or 'PXAT' (SET's option for ARGV[3])
-- Replies 1 when written, 0 when the stored text changed (or the key is gone).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], ARGV[4], ARGV[3])
return 1
