-- Times `entry_id` was delivered, 0 when it is not pending (or no group exists yet: a
-- plain XADD before any worker or producer of this engine ran).
local function deliveries(stream, group, entry_id)
  local p = redis.pcall('XPENDING', stream, group, entry_id, entry_id, 1)
  if p.err or #p == 0 then return 0 end
  return tonumber(p[1][4])
end
