--@include stash_prefix
--@include call_chunked
-- Job fields kept in a record while no entry carries them (delayed).
local function stash_fields(key, flat)
  call_chunked('HSET', key, add_stashed({}, flat))
end

-- The stashed fields, as a flat field list, and their prefixed names (to drop once the
-- fields are written elsewhere).
local function stashed_fields(key)
  return strip_stashed(redis.call('HGETALL', key))
end

-- Read back and remove the stashed fields; returns the flat field list.
local function unstash_fields(key)
  local flat, names = stashed_fields(key)
  call_chunked('HDEL', key, names)
  return flat
end
