-- Append one message to a stream unless its marker says it is already there. Atomic, so a
-- redelivered message can never slip in between the check and the write.
-- KEYS[1] target stream, KEYS[2] marker key (same cluster slot as the stream)
-- ARGV[1] marker TTL (s); ARGV[2] '1': skip the write when the marker exists, '0': write
-- regardless (a first delivery cannot be in the stream yet); ARGV[3..] field, value, ...
-- The marker is always set, to one byte: only its existence matters.
-- Returns the new entry id, or nil when the marker exists (a duplicate).
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
return id
