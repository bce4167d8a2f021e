-- The push markers of one partition, checked and written in one call (all KEYS share the
-- partition's hash tag, so this stays in one slot in Redis Cluster).
-- KEYS: ARGV[1] markers to write (pushes done), then the markers to check.
-- ARGV[1]: how many to write; ARGV[2]: their TTL in seconds.
-- Returns 1 or 0 per checked marker, in order. Writes go first, so a check sees every push
-- recorded before it.
local writes = tonumber(ARGV[1])
for i = 1, writes do
  redis.call('SET', KEYS[i], '1', 'EX', ARGV[2])
end
local found = {}
for i = writes + 1, #KEYS do
  found[#found + 1] = redis.call('EXISTS', KEYS[i])
end
return found
