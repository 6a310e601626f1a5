-- cancel: cancel a waiting, delayed or blocked job; for a running one (delivered, in the pending
-- list) record the request: the record's `cancel` field says `requested` and the job id
-- joins the type's cancels set, which the worker holding it polls; that worker stops the
-- attempt and settles it through stop.lua (REQUESTED, previous state running).
-- KEYS[1] stream
-- KEYS[2] delayed
-- KEYS[3] stats
-- KEYS[4] cancels
-- KEYS[5] job_prefix
-- KEYS[6] events
-- KEYS[7] blocked
-- ARGV[1] group
-- ARGV[2] job_id
-- ARGV[3] result_ttl_ms
-- ARGV[4] entry_id  (a plain XADD's entry found by the caller, '' when none: a job with
-- no record yet gets it here, if that entry is still its own)
-- moves: waiting, delayed, blocked -> cancelled
-- returns: {code, previous_state}
-- codes: OK NOT_FOUND WRONG_STATE REQUESTED
--@include codes
--@include states
--@include now_ms
--@include deliveries
--@include stash
--@include read_entry
--@include job_id_of
--@include ensure_record
--@include free_unique
--@include slots
--@include emit
--@include lane
--@include dependents
local stream, delayed, stats, cancels, job_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, id, ttl, found = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
-- Requests older than this are dropped from the cancels set (their job is long settled).
local REQUEST_KEPT_MS = 86400000
local key = job_prefix .. id
if found ~= '' and redis.call('EXISTS', key) == 0 then
  local flat = read_entry(stream, found)
  if flat and job_id_of(found, flat) == id then ensure_record(key, found, flat) end
end
local rec = redis.call('HMGET', key, 'state', 'entry', 'cancel', 'priority')
local state, entry = rec[1], rec[2]
if not state then return {NOT_FOUND, ''} end
stream = lane_of(stream, rec[4])
local now = now_ms()
if state == RUNNING_RECORDED_AS and deliveries(stream, group, entry) > 0 then
  if not rec[3] then redis.call('HSET', key, 'cancel', 'requested') end
  redis.call('ZADD', cancels, now, id)
  redis.call('ZREMRANGEBYSCORE', cancels, '-inf', now - REQUEST_KEPT_MS)
  return {REQUESTED, RUNNING}
elseif state ~= DELAYED and state ~= RUNNING_RECORDED_AS and state ~= BLOCKED then
  return {WRONG_STATE, state}
end
free_unique(key, id)
free_slots(job_prefix, key, id, redis.call('HGET', key, 'slots'), now)  -- a reserved slot
redis.call('HSET', key, 'state', CANCELLED, 'entry', '', 'finished_at', now,
  'updated_at', now)
if state == DELAYED then
  redis.call('ZREM', delayed, id)
  unstash_fields(key)
elseif state == BLOCKED then
  redis.call('ZREM', KEYS[7], id)
  unstash_fields(key)
else
  redis.call('XDEL', stream, entry)
end
notify_dependents(job_prefix, id, CANCELLED)
if ttl > 0 then redis.call('PEXPIRE', key, ttl) else redis.call('DEL', key) end
redis.call('HINCRBY', stats, 'cancelled', 1)
emit(KEYS[6], 'cancelled', id, 0, now)
return {OK, state}
