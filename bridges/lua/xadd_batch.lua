-- Append one batch's entries to one stream, once: running the same call again after a
-- lost reply, a timeout or a failure midway appends nothing twice, and a late try of an
-- older batch appends nothing at all.
--
-- KEYS[1]    the stream
-- KEYS[2]    the progress record of this bridge instance's calls like this one:
--            '<batch seq>:<one outcome letter per entry that batch got through>'
-- KEYS[3..]  digest buckets (hashes), the current one first; none when no entry has a digest
-- ARGV[1]    the batch's sequence number (increasing per instance)
-- ARGV[2]    TTL of the progress record (s)
-- ARGV[3]    TTL of the current digest bucket (s)
-- ARGV[4..]  per entry: its digest ('' for none), '1' to skip it when the digest is known
--            (else '0'), the number of field/value pairs, then the pairs
-- Returns the outcome of every entry of the call, one letter each: 'W' appended, 'D'
-- skipped because its digest was known; an error for a batch older than the record (only
-- a try that nobody waits for any more can be that). Every key is in the stream's slot.
--
-- Redis does not undo what a script wrote before it failed. Each XADD is pcall'ed: on a
-- failure, what got through is recorded before the error is returned, and the retry
-- resumes after it. (Under maxmemory Redis only refuses a script's first write, so a full
-- Redis fails a call before it appends anything; other failures may come later.)
-- Writes nothing at all unless it appends, so a refused call leaves no trace.

local seq = tonumber(ARGV[1])
local done = ''
local record = redis.call('GET', KEYS[2])
if record then
  local sep = string.find(record, ':', 1, true)
  local recorded_seq = tonumber(string.sub(record, 1, sep - 1))
  if recorded_seq > seq then
    return redis.error_reply('STALE batch ' .. seq .. ' is older than ' .. recorded_seq)
  elseif recorded_seq == seq then
    done = string.sub(record, sep + 1)
  end
end
local letters, recorded, in_batch = {}, {}, {}
local appended = false

local function known(digest)
  if in_batch[digest] then
    return true
  end
  for k = 3, #KEYS do
    if redis.call('HEXISTS', KEYS[k], digest) == 1 then
      return true
    end
  end
  return false
end

local failure
local entry, pos = 0, 4
while pos <= #ARGV do
  local digest, check, pairs = ARGV[pos], ARGV[pos + 1], tonumber(ARGV[pos + 2])
  local first, last = pos + 3, pos + 2 + 2 * pairs
  pos = last + 1
  entry = entry + 1
  if entry > #done then
    if check == '1' and digest ~= '' and known(digest) then
      letters[#letters + 1] = 'D'
    else
      local reply = redis.pcall('XADD', KEYS[1], '*', unpack(ARGV, first, last))
      if type(reply) == 'table' and reply.err then
        failure = reply.err
        break
      end
      appended = true
      letters[#letters + 1] = 'W'
      if digest ~= '' then
        in_batch[digest] = true
        recorded[#recorded + 1] = digest
        recorded[#recorded + 1] = ''
      end
    end
  end
end

local outcome = done .. table.concat(letters)
if appended then
  redis.call('SET', KEYS[2], ARGV[1] .. ':' .. outcome, 'EX', ARGV[2])
  if #recorded > 0 then
    redis.call('HSET', KEYS[3], unpack(recorded))
    redis.call('EXPIRE', KEYS[3], ARGV[3])
  end
end
if failure then
  return redis.error_reply(failure)
end
return outcome
