-- Forward entries of one source stream to one partition's stream, each at most once and in
-- the source's order: the partition remembers the newest source id it took from each source
-- (HSET routed <source> <id>), and the source's single reader sends ids in increasing order,
-- so an id at or below the mark was forwarded before (a retry, or a redelivery after a crash).
--
-- KEYS[1] target partition stream, KEYS[2] its routing marks (hash)
-- ARGV[1] source name, then per entry: source id, n, n field/value pairs (routed_from added)
-- Returns the number of entries appended.

local function cmp_part(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

local function cmp_id(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  local c = cmp_part(am, bm)
  if c ~= 0 then return c end
  return cmp_part(as, bs)
end

local source = ARGV[1]
local mark = redis.call('HGET', KEYS[2], source)
local appended = 0
local a = 2
while a <= #ARGV do
  local id, pairs = ARGV[a], tonumber(ARGV[a + 1])
  if not mark or cmp_id(id, mark) > 0 then
    redis.call('XADD', KEYS[1], '*', unpack(ARGV, a + 2, a + 1 + 2 * pairs))
    redis.call('HSET', KEYS[2], source, id)
    mark = id
    appended = appended + 1
  end
  a = a + 2 + 2 * pairs
end
return appended
