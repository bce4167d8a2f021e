-- How far a replay round may go in one stream: the number of entries in [ARGV[1], ARGV[2]]
-- up to ARGV[3], and the id of the last of them, without sending the entries anywhere.
-- KEYS[1] stream. Returns {count, id of the last one or ''}.
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
if #rows == 0 then return {0, ''} end
return {#rows, rows[#rows][1]}
