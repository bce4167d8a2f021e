-- Append dead letters to an ingress stream that lies in another Redis Cluster slot than
-- their DLQ (the compatibility stream and its DLQ): each DLQ id is marked in a hash of the
-- stream's slot in the same call as its append, so an entry is appended at most once, by
-- whichever operator marks it first, even when a run dies before deleting it from the DLQ.
-- The caller deletes the batch from the DLQ afterwards (a second call, in the DLQ's slot).
-- KEYS[1] ingress stream, KEYS[2] its requeue marks (hash: DLQ id -> 1)
-- ARGV[1] TTL of the marks (ms), then per entry: its DLQ id, n, then n field/value pairs.
-- Returns the DLQ ids appended by this call.
local appended = {}
local i = 2
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('HSETNX', KEYS[2], id, '1') == 1 then
    redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 2, i + 1 + 2 * n))
    appended[#appended + 1] = id
  end
  i = i + 2 + 2 * n
end
if #appended > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return appended
