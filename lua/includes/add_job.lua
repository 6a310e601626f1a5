--@include states
--@include fields
--@include stash
--@include lane
-- A new job (no record yet): its record, then its stream entry when due now or its place
-- in the delayed set when due later. id '' takes the entry id (or a generated id for a
-- delayed job); an id given is written into the entry as its `id` field, marked
-- `id_claimed` 1 (the fetch need not check that the id is this job's). A `priority` of
-- high or low puts the entry in that level's stream and the level in the record.
-- Returns the job's id and state.
local function add_job(stream, delayed, stats, job_prefix, id, flat, due, now)
  if due > now then
    if id == '' then
      id = now .. '-d' .. redis.call('HINCRBY', stats, 'seq', 1)
    end
    set_field(flat, 'id', id)
    set_field(flat, 'id_claimed', '1')
    local key = job_prefix .. id
    redis.call('HSET', key, 'state', DELAYED, 'due_at', due, 'enqueued_at', now)
    stash_fields(key, flat)
    redis.call('ZADD', delayed, due, id)
    return id, DELAYED
  end
  if id ~= '' then
    set_field(flat, 'id', id)
    set_field(flat, 'id_claimed', '1')
  end
  local lane = stream
  if #flat > 2 then lane = lane_of(stream, get_field(flat, 'priority')) end
  local entry = redis.call('XADD', lane, '*', unpack(flat))
  if id == '' then id = entry end
  if lane ~= stream then
    redis.call('HSET', job_prefix .. id, 'state', WAITING, 'entry', entry, 'enqueued_at', now,
      'priority', get_field(flat, 'priority'))
  else
    redis.call('HSET', job_prefix .. id, 'state', WAITING, 'entry', entry, 'enqueued_at', now)
  end
  return id, WAITING
end
