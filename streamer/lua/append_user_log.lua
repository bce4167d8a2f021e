-- Append one event to a user's replay log, idempotently, and return the owning gateways.
-- KEYS[1] user log stream, KEYS[2] dedupe key, KEYS[3] owners hash (all share the {uid} tag)
-- ARGV[1] max log length, ARGV[2] log idle TTL (s), ARGV[3] dedupe TTL (s)
-- ARGV[4] event type, ARGV[5] content JSON, ARGV[6] event key, ARGV[7] source entry id
-- Returns {log id, 1 if the event was already in the log else 0, previous log id or '',
--          owner gateway ids...}
-- The previous id lets a gateway notice that a delivery overtook an earlier one (two workers
-- appending for one user race to the inboxes) and fill the gap from the log.
local log_id = redis.call('GET', KEYS[2])
local duplicate = 1
local prev = ''
if not log_id then
  duplicate = 0
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if last[1] then prev = last[1][1] end
  log_id = redis.call('XADD', KEYS[1], 'MAXLEN', '=', ARGV[1], '*',
    'type', ARGV[4], 'content', ARGV[5], 'event', ARGV[6], 'source', ARGV[7])
  redis.call('SET', KEYS[2], log_id, 'EX', ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
local result = {log_id, duplicate, prev}
for _, gateway in ipairs(redis.call('HKEYS', KEYS[3])) do
  result[#result + 1] = gateway
end
return result
