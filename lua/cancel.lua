-- cancel: cancel a waiting or delayed job. A running one (delivered, in the pending
-- list) is refused with WRONG_STATE: cancellation of running jobs does not exist yet.
-- KEYS[1] stream
-- KEYS[2] delayed
-- KEYS[3] stats
-- KEYS[4] job_prefix
-- KEYS[5] events
-- ARGV[1] group
-- ARGV[2] job_id
-- ARGV[3] result_ttl_ms
-- ARGV[4] entry_id  (a plain XADD's entry found by the caller, '' when none: a job with
-- no record yet gets it here, if that entry is still its own)
-- moves: waiting, delayed -> cancelled
-- returns: {code, previous_state}
-- codes: OK NOT_FOUND WRONG_STATE
--@include codes
--@include states
--@include now_ms
--@include deliveries
--@include stash
--@include read_entry
--@include job_id_of
--@include ensure_record
--@include emit
local stream, delayed, stats, job_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, id, ttl, found = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local key = job_prefix .. id
if found ~= '' and redis.call('EXISTS', key) == 0 then
  local flat = read_entry(stream, found)
  if flat and job_id_of(found, flat) == id then ensure_record(key, found, flat) end
end
local rec = redis.call('HMGET', key, 'state', 'entry')
local state, entry = rec[1], rec[2]
if not state then return {NOT_FOUND, ''} end
if state == RUNNING_RECORDED_AS and deliveries(stream, group, entry) > 0 then
  return {WRONG_STATE, RUNNING}
elseif state ~= DELAYED and state ~= RUNNING_RECORDED_AS then
  return {WRONG_STATE, state}
end
local now = now_ms()
redis.call('HSET', key, 'state', CANCELLED, 'entry', '', 'finished_at', now,
  'updated_at', now)
if state == DELAYED then
  redis.call('ZREM', delayed, id)
  unstash_fields(key)
else
  redis.call('XDEL', stream, entry)
end
if ttl > 0 then redis.call('PEXPIRE', key, ttl) else redis.call('DEL', key) end
redis.call('HINCRBY', stats, 'cancelled', 1)
emit(KEYS[5], 'cancelled', id, 0, now)
return {OK, state}
