--@include states
--@include stash_prefix
--@include max_fields
--@include free_unique
--@include slots
--@include dependents
-- Move a job to the dead stream. `flat` is its fields; the record keeps the error. Written
-- before the caller deletes the entry. An entry over MAX_FIELDS (malformed) keeps its first
-- MAX_FIELDS fields: one XADD cannot carry more.
local function dead_letter(dead, stats, key, job_id, flat, reason, err, tb, attempts, now)
  if #flat > MAX_FIELDS * 2 then
    err = err .. ' (the dead entry keeps the first ' .. MAX_FIELDS .. ')'
    local kept = {}
    for i = 1, MAX_FIELDS * 2 do kept[i] = flat[i] end
    flat = kept
  end
  local args = add_stashed({'id', job_id, 'reason', reason, 'error', err,
    'attempts', attempts, 'failed_at', now}, flat)
  local dead_id = redis.call('XADD', dead, '*', unpack(args))
  free_unique(key, job_id)
  free_slots(string.sub(key, 1, #key - #job_id), key, job_id, redis.call('HGET', key, 'slots'), now)
  redis.call('HSET', key, 'state', DEAD, 'dead_entry', dead_id, 'entry', '',
    'reason', reason, 'error', err, 'traceback', tb, 'attempts', attempts,
    'finished_at', now, 'updated_at', now)
  redis.call('PERSIST', key)
  notify_dependents(string.sub(key, 1, #key - #job_id), job_id, DEAD)
  redis.call('HINCRBY', stats, 'dead', 1)
  return dead_id
end
