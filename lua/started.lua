-- started: the `started` events of a batch the worker fetched (delivery itself is
-- XREADGROUP, which no script sees). The worker calls it once per fetched batch of a type,
-- before any of the batch's entries runs.
-- KEYS[1] events
-- ARGV[1] consumer
-- ARGV[2...] job_id, attempt  (repeated per job)
-- moves: none
-- returns: {code}
-- codes: OK
--@include codes
--@include now_ms
--@include emit
local events, consumer = KEYS[1], ARGV[1]
local now = now_ms()
for i = 2, #ARGV, 2 do
  emit(events, 'started', ARGV[i], ARGV[i + 1], now, 'consumer', consumer)
end
return {OK}
