--@include states
--@include deliveries
-- Deduplication by `dedup_key`: the key `<prefix>:{T}:dedup:<dedup_key>` (beside the job
-- records: the type's slot) holds the id of the job that answers for it. The helpers are
-- made by dedup_helpers() only for a job that has a dedup_key: functions made at a
-- script's top level cost every call of it (~0.2 us each, measured on enqueue).
local function dedup_helpers(stream, job_prefix)
  -- The engine's one consumer group; held against streamjobs.keys.GROUP by a test.
  local DEDUP_GROUP = 'workers'
  local h = {}

  function h.key_of(key)
    return string.sub(job_prefix, 1, -5) .. 'dedup:' .. key
  end

  -- The job that answers for `dk` under `mode`: its id, state and entry; nil when none.
  -- throttle: any job whose record exists (the key's ttl bounds the window); unique: one
  -- waiting, delayed or running; debounce: one not started yet (delayed, or undelivered).
  function h.holder(dk, mode)
    local other = redis.call('GET', dk)
    if not other then return nil end
    local rec = redis.call('HMGET', job_prefix .. other, 'state', 'entry')
    local state, entry = rec[1], rec[2]
    if not state then return nil end
    if mode == 'throttle' or state == DELAYED then return other, state, entry end
    if state ~= RUNNING_RECORDED_AS then return nil end
    if mode == 'debounce' and deliveries(stream, DEDUP_GROUP, entry) > 0 then return nil end
    return other, state, entry
  end

  -- The job `id` takes the key: for `ttl` ms when given, and freed at its final
  -- transition when unique (its record names the key).
  function h.take(dk, mode, ttl, key, id)
    if ttl and ttl > 0 then
      redis.call('SET', dk, id, 'PX', ttl)
    else
      redis.call('SET', dk, id)
    end
    if mode == 'unique' then redis.call('HSET', key, 'unique', dk) end
  end

  return h
end
