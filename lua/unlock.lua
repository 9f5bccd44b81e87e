-- Releases a lock only while it still holds this store's token, so a store whose
-- lock expired cannot release a lock that another store took since.
-- KEYS[1]  the lock key
-- ARGV[1]  the token written by lock()
-- Replies 1 when the lock was released, 0 when it was not held with that token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
