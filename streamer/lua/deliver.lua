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
-- Idempotent without a marker per event: every log entry records the ingress entry it came
-- from ('source'), and one owner appends a partition's entries in id order, so an event is
-- already in its target's log iff its source id is at or below the newest entry's source.
-- (A Lua script is not rolled back when a command fails midway: this rule also covers a
-- retry after a partial append.) A producer id, when given, is checked with its own key.
-- A duplicate's log id is looked up, so a redelivered event still reaches live sockets.
--
-- Returns {owners, events}: owners[t] = gateway ids; events = flat triples per event
-- {log id ('' when unknown), previous log id of its target ('' when none), 1 if duplicate}.

local function cmp_part(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

-- Stream ids compared as numbers; decimal strings, so no precision is lost.
local function cmp_id(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  local c = cmp_part(am, bm)
  if c ~= 0 then return c end
  return cmp_part(as, bs)
end

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

-- The log id of the entry appended from `source`, and the id before it ('' when unknown).
local function find_source(log, source)
  local upper = '+'
  while true do
    local page = redis.call('XREVRANGE', log, upper, '-', 'COUNT', 50)
    for i, entry in ipairs(page) do
      local from = field(entry[2], 'source')
      if from == source then
        local before = page[i + 1]
        if before then return entry[1], before[1] end
        local older = redis.call('XREVRANGE', log, '(' .. entry[1], '-', 'COUNT', 1)
        return entry[1], older[1] and older[1][1] or ''
      end
      if from and cmp_id(from, source) < 0 then return '', '' end
    end
    if #page < 50 then return '', '' end
    upper = '(' .. page[#page][1]
  end
end

if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LEASE this worker no longer holds the partition')
end
local dedupe_ttl = ARGV[2]
local targets = tonumber(ARGV[3])
local tail, newest_source, maxlen, ttl = {}, {}, {}, {}
local a = 4
for t = 1, targets do
  maxlen[t], ttl[t] = ARGV[a], ARGV[a + 1]
  a = a + 2
  local last = redis.call('XREVRANGE', KEYS[2 * t], '+', '-', 'COUNT', 1)[1]
  tail[t] = last and last[1] or ''
  newest_source[t] = last and field(last[2], 'source') or nil
end

local events = {}
while a <= #ARGV do
  local t, source = tonumber(ARGV[a]), ARGV[a + 1]
  local event_type, content, event_key, dedupe = ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  a = a + 6
  local log = KEYS[2 * t]
  local log_id, prev, duplicate = '', '', 0
  local seen = dedupe ~= '' and redis.call('GET', dedupe)
  if newest_source[t] and cmp_id(source, newest_source[t]) <= 0 then
    duplicate = 1
    log_id, prev = find_source(log, source)
  elseif seen then
    duplicate, log_id = 1, seen  -- the producer sent this event before, under its own id
  else
    log_id = redis.call('XADD', log, 'MAXLEN', '~', maxlen[t], '*',
      'type', event_type, 'content', content, 'event', event_key, 'source', source)
    prev, tail[t], newest_source[t] = tail[t], log_id, source
    if dedupe ~= '' then redis.call('SET', dedupe, log_id, 'EX', dedupe_ttl) end
  end
  events[#events + 1] = log_id
  events[#events + 1] = prev
  events[#events + 1] = duplicate
end

local owners = {}
for t = 1, targets do
  redis.call('EXPIRE', KEYS[2 * t], ttl[t])
  owners[t] = redis.call('HKEYS', KEYS[2 * t + 1])
end
return {owners, events}
