-- Times `entry_id` was delivered, 0 when it is not pending.
local function deliveries(stream, group, entry_id)
  local p = redis.call('XPENDING', stream, group, entry_id, entry_id, 1)
  if #p == 0 then return 0 end
  return tonumber(p[1][4])
end
