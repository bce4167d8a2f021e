-- Append one page of replayed entries to a stream. A script rather than a MULTI of XADDs:
-- it runs as atomically, and one command per page instead of one per entry cut the
-- replay's CPU per entry by ~40% (BENCHMARKS.md, Replay).
-- KEYS[1] target stream
-- ARGV per entry: its number of field/value pairs n, then the n pairs.
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + 2 * n))
  i = i + 1 + 2 * n
end
return 0
