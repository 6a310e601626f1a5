-- touch: reset the idle time of entries still running (heartbeat for long jobs), so that
-- reclaim leaves them alone. Only entries the caller still owns are touched.
-- KEYS[1] stream
-- ARGV[1] group
-- ARGV[2] consumer
-- ARGV[3...] entry_id  (repeated)
-- moves: none
-- returns: {code}, then {entry_id} per entry the caller no longer owns
-- codes: OK
--@include codes
--@include owns
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local out = {OK}
for i = 3, #ARGV do
  local entry = ARGV[i]
  if owns(stream, group, entry, consumer) then
    -- JUSTID: resets idle time without counting a delivery.
    redis.call('XCLAIM', stream, group, consumer, 0, entry, 'JUSTID')
  else
    out[#out + 1] = entry
  end
end
return out
