-- Append one event to its partition stream at most once per event id within a window: the
-- marker remembers the stream id the event id was first appended as, so a producer's retry
-- (or a second HTTP request with the same id) gets that id back and writes nothing.
-- Both keys carry the partition's hash tag: one slot in Redis Cluster.
--
-- KEYS[1] partition stream, KEYS[2] (optional) the event id's marker (published:<id>)
-- ARGV[1] payload (JSON), ARGV[2] marker lifetime in seconds
-- Returns {stream id, 1 if it was appended before (nothing written) else 0}.

if KEYS[2] then
  local seen = redis.call('GET', KEYS[2])
  if seen then return {seen, 1} end
end
local id = redis.call('XADD', KEYS[1], '*', 'payload', ARGV[1])
if KEYS[2] then redis.call('SET', KEYS[2], id, 'EX', ARGV[2]) end
return {id, 0}
