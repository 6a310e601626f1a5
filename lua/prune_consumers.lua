-- prune_consumers: delete consumers of the group that hold nothing and have been idle a
-- long time (each worker process is a new consumer; without this the group's consumer
-- list grows with every restart). Atomic, so a consumer that fetches entries between
-- the check and the delete cannot lose them: DELCONSUMER drops a consumer's pending list.
-- KEYS[1] stream
-- ARGV[1] group
-- ARGV[2] min_idle_ms
-- moves: none
-- returns: {code, pruned}
-- codes: OK
--@include codes
local stream, group, min_idle = KEYS[1], ARGV[1], tonumber(ARGV[2])
local pruned = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if tonumber(info['pending']) == 0 and tonumber(info['idle']) >= min_idle then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, info['name'])
    pruned = pruned + 1
  end
end
return {OK, pruned}
