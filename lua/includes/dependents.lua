-- A job other jobs wait for (`after`) has `dependents` 1 in its record (depend.lua). When
-- it ends (completed, dead, cancelled, expired), its id and final state go into its type's
-- dependency outbox `<prefix>:{T}:dep_outbox`, from which a worker of the type tells each
-- waiting job in the job's own slot (parent_done.lua) and then clears it (engine/deps.py).
-- `marked`: the record's `dependents` field when the caller read it (nil: read here).
local function notify_dependents(job_prefix, id, state, marked)
  if marked == nil then marked = redis.call('HGET', job_prefix .. id, 'dependents') end
  if marked then
    redis.call('HSET', string.sub(job_prefix, 1, -5) .. 'dep_outbox', id, state)
  end
end
