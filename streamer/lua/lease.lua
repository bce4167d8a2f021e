-- Take, keep or give back the lease on one partition (a compare-and-set on its holder).
-- KEYS[1] lease key
-- ARGV[1] 'acquire' | 'renew' | 'release', ARGV[2] token (worker id and epoch), ARGV[3] TTL ms
-- Returns 1 when this token holds the lease afterwards (acquire, renew) or gave it back
-- (release), else 0.
local holder = redis.call('GET', KEYS[1])
local op, token = ARGV[1], ARGV[2]
if op == 'acquire' then
  if holder and holder ~= token then return 0 end
  redis.call('SET', KEYS[1], token, 'PX', ARGV[3])
  return 1
elseif op == 'renew' then
  if holder ~= token then return 0 end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if holder ~= token then return 0 end
redis.call('DEL', KEYS[1])
return 1
