-- started: the `started` events of attempts that began since the worker's last settle
-- (delivery itself is XREADGROUP, which no script sees). The worker batches them with its
-- settles (streamjobs.settle): an attempt that ends before they are sent has its
-- `started` event written by ack or fail instead, first; the rest come here, within a
-- few ms of their start, and before any progress event of theirs. No record is written.
-- KEYS[1] events
-- ARGV[1] consumer
-- ARGV[2...] job_id, attempt, ago_ms  (repeated per job; ago_ms: how long ago it began)
-- moves: none
-- returns: {code}
-- codes: OK
--@include codes
--@include now_ms
--@include emit
local events, consumer = KEYS[1], ARGV[1]
local now = now_ms()
for i = 2, #ARGV, 3 do
  emit(events, 'started', ARGV[i], ARGV[i + 1], now - tonumber(ARGV[i + 2]),
    'consumer', consumer)
end
return {OK}
