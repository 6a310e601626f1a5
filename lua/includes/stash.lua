--@include stash_prefix
-- Job fields kept in a record while no entry carries them (delayed).
local function stash_fields(key, flat)
  local args = add_stashed({}, flat)
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
end

-- Read back and remove the stashed fields; returns the flat field list.
local function unstash_fields(key)
  local flat, names = strip_stashed(redis.call('HGETALL', key))
  if #names > 0 then redis.call('HDEL', key, unpack(names)) end
  return flat
end
