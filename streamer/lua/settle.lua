-- Carry out the fate of a batch of one partition's entries, atomically, for the partition's
-- lease holder only (a worker that lost its lease leaves its entries to the new owner).
--
-- KEYS[1] lease, KEYS[2] partition stream, KEYS[3] its DLQ, KEYS[4] its feedback stream
-- ARGV[1] lease token, ARGV[2] consumer group, ARGV[3] consumer, ARGV[4] claim idle (ms)
-- then four sections, each a count followed by its items:
--   acks:        entry id
--   retries:     entry id, delay (ms): its idle time is backdated so that XAUTOCLAIM takes
--                it again after the delay
--   dead:        entry id, n, then n field/value pairs (original fields + reason, ...)
--   feedback:    n, then n field/value pairs
-- Returns the number of entries acked (dead letters included).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LEASE this worker no longer holds the partition')
end
local group, consumer, claim_idle = ARGV[2], ARGV[3], tonumber(ARGV[4])
local a = 5
local acks = {}

local n = tonumber(ARGV[a]); a = a + 1
for _ = 1, n do acks[#acks + 1] = ARGV[a]; a = a + 1 end

n = tonumber(ARGV[a]); a = a + 1
for _ = 1, n do
  local idle = math.max(0, claim_idle - tonumber(ARGV[a + 1]))
  redis.call('XCLAIM', KEYS[2], group, consumer, 0, ARGV[a], 'IDLE', idle, 'JUSTID')
  a = a + 2
end

n = tonumber(ARGV[a]); a = a + 1
for _ = 1, n do
  local id, pairs = ARGV[a], tonumber(ARGV[a + 1])
  redis.call('XADD', KEYS[3], '*', unpack(ARGV, a + 2, a + 1 + 2 * pairs))
  acks[#acks + 1] = id
  a = a + 2 + 2 * pairs
end

n = tonumber(ARGV[a]); a = a + 1
for _ = 1, n do
  local pairs = tonumber(ARGV[a])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 1000000, '*', unpack(ARGV, a + 1, a + 2 * pairs))
  a = a + 1 + 2 * pairs
end

if #acks > 0 then redis.call('XACK', KEYS[2], group, unpack(acks)) end
return #acks
