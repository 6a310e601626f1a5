--@include failures
-- The record key of an entry's job, and DUPLICATE_ID when the record of `id` belongs to
-- another entry (a foreign XADD reusing a job's id): such an entry is keyed by its own
-- entry id and the other job's record is left alone. A live entry's record names it.
local function own_record(job_prefix, entry, id)
  local key = job_prefix .. id
  local rec = redis.call('HMGET', key, 'state', 'entry')
  if rec[1] and rec[2] ~= entry then return job_prefix .. entry, DUPLICATE_ID end
  return key, nil
end
