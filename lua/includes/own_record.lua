--@include failures
-- The record key of an entry's job, and DUPLICATE_ID when the key of `id` belongs to
-- something else: another entry's record (a foreign XADD reusing a job's id), or a value
-- that is no record at all. Such an entry is keyed by its own entry id and that key is
-- left alone. A live entry's record names it.
local function own_record(job_prefix, entry, id)
  local key = job_prefix .. id
  local rec = redis.pcall('HMGET', key, 'state', 'entry')
  if rec.err or (rec[1] and rec[2] ~= entry) then return job_prefix .. entry, DUPLICATE_ID end
  return key, nil
end
