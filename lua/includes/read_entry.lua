-- The fields of one stream entry, or nil when it no longer exists.
local function read_entry(stream, entry_id)
  local rows = redis.call('XRANGE', stream, entry_id, entry_id)
  if #rows == 0 then return nil end
  return rows[1][2]
end
