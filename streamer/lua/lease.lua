-- Take, keep or give back the lease on one unit (a compare-and-set on its holder).
-- KEYS[1] lease key
-- ARGV[1] 'acquire' | 'renew' | 'release', ARGV[2] token (worker id and epoch), ARGV[3] TTL ms
-- A released lease is not deleted but left as the empty string for one TTL, so that the next
-- holder knows the unit was handed over on purpose, not lost by a holder that died.
-- Returns, for acquire: 0 not taken (someone else holds it), 1 taken (free: new, or its
-- holder's lease ran out), 2 taken (handed over); for renew and release: 1 done, 0 not held.
local holder = redis.call('GET', KEYS[1])
local op, token = ARGV[1], ARGV[2]
if op == 'acquire' then
  if holder == token then return 1 end
  if holder and holder ~= '' then return 0 end
  redis.call('SET', KEYS[1], token, 'PX', ARGV[3])
  return holder == '' and 2 or 1
elseif op == 'renew' then
  if holder ~= token then return 0 end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if holder ~= token then return 0 end
redis.call('SET', KEYS[1], '', 'PX', ARGV[3])
return 1
