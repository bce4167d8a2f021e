-- Replay one window of a stream into itself, inside Redis (no entry crosses the network):
-- each entry of [ARGV[1], ARGV[2]] (at most ARGV[3] of them) is appended again with its
-- fields, without `requeued_from`, and with `replay_of` set to its id: the rule of
-- streamer.ops.replay.entries.replayed_fields, which a test holds this script to. With
-- ARGV[4] = '1', entries carrying `routed_from` (copies forwarded from another stream, which
-- the replay of their origin forwards again) are skipped.
-- The window must end at or before the stream's last id when the replay began, so the
-- appended copies (later ids) are never read back.
-- KEYS[1] stream
-- Returns {entries read, entries appended, id of the last entry read or ''}.
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
local skip_copies = ARGV[4] == '1'
local special = {requeued_from = true, replay_of = true, routed_from = true}
local appended = 0
for _, row in ipairs(rows) do
  local fields, plain = row[2], true
  for i = 1, #fields, 2 do
    if special[fields[i]] then
      plain = false
      break
    end
  end
  local out, copy = fields, false
  if not plain then  -- the rare entry with marks: rebuilt field by field
    out = {}
    for i = 1, #fields, 2 do
      local name = fields[i]
      if name == 'routed_from' and skip_copies then
        copy = true
        break
      end
      if name ~= 'requeued_from' and name ~= 'replay_of' then
        out[#out + 1] = name
        out[#out + 1] = fields[i + 1]
      end
    end
  end
  if not copy then
    out[#out + 1] = 'replay_of'
    out[#out + 1] = row[1]
    redis.call('XADD', KEYS[1], '*', unpack(out))
    appended = appended + 1
  end
end
local last = ''
if #rows > 0 then last = rows[#rows][1] end
return {#rows, appended, last}
