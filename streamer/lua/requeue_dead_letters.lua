-- Move dead letters back to the ingress stream: append, then delete from the DLQ. An entry
-- already gone from the DLQ (requeued or purged by someone else meanwhile) is skipped.
-- KEYS[1] ingress stream, KEYS[2] dead-letter stream.
-- ARGV per entry: its DLQ id, its number of field/value pairs n, then the n pairs.
-- Returns the DLQ ids that were moved.
local requeued = {}
local i = 1
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  if #redis.call('XRANGE', KEYS[2], id, id) == 1 then
    redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 2, i + 1 + 2 * n))
    redis.call('XDEL', KEYS[2], id)
    requeued[#requeued + 1] = id
  end
  i = i + 2 + 2 * n
end
return requeued
