--@include fields
-- The stream a job of priority `level` waits in (engine/keys.py, TypeKeys.stream): `high`
-- and `low` jobs have streams of their own beside the type's (`<stream>:high`,
-- `<stream>:low`); `normal`, none or anything else is the type's stream. `stream` is the
-- type's own (normal) stream: only scripts given that one call this.
local function lane_of(stream, level)
  if level == 'high' or level == 'low' then return stream .. ':' .. level end
  return stream
end

-- XADD a job's fields to its level's stream; its record (`key`) keeps the level when it
-- is not the type's stream (cancel.lua finds the entry by it). Returns the entry id.
local function add_to_lane(stream, key, flat)
  local level = get_field(flat, 'priority')
  local lane = lane_of(stream, level)
  local entry = redis.call('XADD', lane, '*', unpack(flat))
  if lane ~= stream then
    redis.call('HSET', key, 'priority', level)
  else
    redis.call('HDEL', key, 'priority')
  end
  return entry
end
