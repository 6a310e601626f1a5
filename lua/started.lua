-- started: the `started` events of a batch the worker fetched (delivery itself is
-- XREADGROUP, which no script sees). The worker calls it once per fetched batch of a type,
-- before any of the batch's entries runs. A job with a record gets the attempt's start
-- and worker written into it (ack and fail read them for the attempt's history).
-- KEYS[1] events
-- KEYS[2] job_prefix
-- ARGV[1] consumer
-- ARGV[2...] job_id, attempt  (repeated per job)
-- moves: none
-- returns: {code}
-- codes: OK
--@include codes
--@include now_ms
--@include emit
local events, job_prefix, consumer = KEYS[1], KEYS[2], ARGV[1]
local now = now_ms()
for i = 2, #ARGV, 2 do
  local key = job_prefix .. ARGV[i]
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'started_at', now, 'worker', consumer)
  end
  emit(events, 'started', ARGV[i], ARGV[i + 1], now, 'consumer', consumer)
end
return {OK}
