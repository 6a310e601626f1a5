--@include states
--@include fields
-- A job written by a plain XADD gets its record at its first transition.
local function ensure_record(key, entry_id, flat)
  if redis.call('EXISTS', key) == 0 then
    local ms = string.match(entry_id, '^(%d+)')
    local attempts = tonumber(get_field(flat, 'attempts') or '0') or 0
    redis.call('HSET', key, 'state', RUNNING_RECORDED_AS, 'entry', entry_id,
      'enqueued_at', ms, 'attempts', attempts)
  end
end
