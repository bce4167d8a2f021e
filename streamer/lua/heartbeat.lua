-- Record a heartbeat and read who is alive, on the registry node's own clock (TIME), so that
-- host clocks that disagree cannot make a live process look dead or a dead one live.
-- KEYS[1] registry (sorted set: member -> last heartbeat, unix ms)
-- ARGV[1] member ('' to only read), ARGV[2] dead after (ms), ARGV[3] forget after (ms)
-- Returns {now_ms, live members...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] ~= '' then redis.call('ZADD', KEYS[1], now, ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf')
table.insert(live, 1, now)
return live
