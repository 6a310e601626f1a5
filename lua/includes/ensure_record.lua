--@include states
--@include fields
-- A job written by a plain XADD gets its record at its first transition. An `attempts`
-- the entry rules refuse counts as 0 (the entry is dead-lettered as malformed anyway).
local function ensure_record(key, entry_id, flat)
  if redis.call('EXISTS', key) == 0 then
    local ms = string.match(entry_id, '^(%d+)')
    local raw = get_field(flat, 'attempts') or '0'
    local attempts = 0
    if #raw <= 15 and string.find(raw, '^%d+$') then attempts = tonumber(raw) end
    redis.call('HSET', key, 'state', RUNNING_RECORDED_AS, 'entry', entry_id,
      'enqueued_at', ms, 'attempts', attempts)
  end
end
