-- Does `consumer` hold `entry_id` in the group's pending list? (XACK alone takes no consumer.)
local function owns(stream, group, entry_id, consumer)
  local p = redis.call('XPENDING', stream, group, entry_id, entry_id, 1, consumer)
  return #p > 0
end
