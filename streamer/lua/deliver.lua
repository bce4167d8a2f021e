-- Append a batch of one partition's events to their replay logs, idempotently and in stream
-- order, and return each target's owning gateways. Runs only for the partition's lease holder.
--
-- KEYS[1]            the partition's lease
-- KEYS[2t], KEYS[2t+1]  target t's replay log and its owners hash (a user or a topic), t = 1..T
-- ARGV[1] lease token, ARGV[2] dedupe TTL (s), ARGV[3] T
-- ARGV, per target (from 4): max log length, log idle TTL (s)
-- ARGV, then per event: target index, source entry id, event type, content JSON, event key,
--       dedupe key ('' when the event has no producer id)
--
-- Idempotent without a marker per event: an event's log entry takes the id of the partition
-- entry it came from. A target's events all come from one partition stream, appended by its
-- one owner in stream order, so its log ids only grow; XADD refuses an id at or below the
-- log's newest, which is exactly "already appended". (A Lua script is not rolled back when a
-- command fails midway: the same rule covers a retry after a partial append.) A producer id,
-- when given, is checked with its own key. A duplicate still reaches live sockets when its
-- entry is still in the log: its id and the id before it are looked up (a rare path).
--
-- Returns {owners, events}: owners[t] = gateway ids; events = flat triples per event
-- {log id ('' when unknown), previous log id of its target ('' when none), 1 if duplicate}.

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LEASE this worker no longer holds the partition')
end

-- The id of `log`'s entry `source` and of the entry before it; '' when it is gone.
local function find(log, source)
  if not redis.call('XRANGE', log, source, source)[1] then return '', '' end
  local older = redis.call('XREVRANGE', log, '(' .. source, '-', 'COUNT', 1)[1]
  return source, older and older[1] or ''
end

local dedupe_ttl = ARGV[2]
local targets = tonumber(ARGV[3])
local tail, maxlen = {}, {}
local a = 4
for t = 1, targets do
  maxlen[t] = ARGV[a]
  a = a + 2
  local last = redis.call('XREVRANGE', KEYS[2 * t], '+', '-', 'COUNT', 1)[1]
  tail[t] = last and last[1] or ''
end

local events, n = {}, 0
while a <= #ARGV do
  local t, source, dedupe = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 5]
  local log = KEYS[2 * t]
  local log_id, prev, duplicate = source, tail[t], 0
  local seen = dedupe ~= '' and redis.call('GET', dedupe)
  if seen then
    log_id, prev, duplicate = seen, '', 1  -- the producer sent this event before
  else
    local added = redis.pcall('XADD', log, 'MAXLEN', '~', maxlen[t], source,
      'type', ARGV[a + 2], 'content', ARGV[a + 3], 'event', ARGV[a + 4])
    if type(added) == 'table' and added.err then
      if not string.find(added.err, 'equal or smaller', 1, true) then
        return redis.error_reply(added.err)  -- OOM and the like: the batch is retried
      end
      duplicate = 1
      log_id, prev = find(log, source)
    else
      tail[t] = source
      if dedupe ~= '' then redis.call('SET', dedupe, source, 'EX', dedupe_ttl) end
    end
  end
  a = a + 6
  events[n + 1], events[n + 2], events[n + 3] = log_id, prev, duplicate
  n = n + 3
end

local owners = {}
a = 5
for t = 1, targets do
  redis.call('EXPIRE', KEYS[2 * t], ARGV[a])
  a = a + 2
  owners[t] = redis.call('HKEYS', KEYS[2 * t + 1])
end
return {owners, events}
