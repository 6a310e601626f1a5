-- schedule_tick: enqueue one cron tick exactly once across any number of schedulers: a
-- compare-and-advance of the schedule's next run, then the tick's job, added as enqueue
-- adds one, with the deterministic id cron:<name>:<tick_ms>. Cron cannot be evaluated
-- here: the caller computed tick_ms (the latest tick due, <= now: after downtime the missed
-- ticks before it are skipped) and next_ms (the first tick after now).
-- KEYS[1] stream
-- KEYS[2] delayed
-- KEYS[3] stats
-- KEYS[4] job_prefix
-- KEYS[5] schedule_due
-- KEYS[6] schedule_runs
-- KEYS[7] events
-- ARGV[1] schedule
-- ARGV[2] expected_ms  (the next run the caller read)
-- ARGV[3] tick_ms
-- ARGV[4] next_ms
-- ARGV[5...] field  (the job's field, value pairs, without an id)
-- ALREADY: the next run is no longer expected_ms (another scheduler advanced it, or the
-- schedule was paused or removed). WRONG_STATE: expected_ms is not due on the server
-- clock. DUPLICATE: the tick's job already exists (the schedule advances anyway).
-- moves: new -> waiting
-- returns: {code, job_id}
-- codes: OK ALREADY WRONG_STATE DUPLICATE
--@include codes
--@include now_ms
--@include add_job
--@include emit
local stream, delayed, stats, job_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local due_set, runs = KEYS[5], KEYS[6]
local name, expected = ARGV[1], tonumber(ARGV[2])
local tick, next_run = tonumber(ARGV[3]), tonumber(ARGV[4])
if not expected or not tick or not next_run or next_run <= tick then
  return redis.error_reply('ERR schedule_tick: expected_ms, tick_ms, next_ms must be numbers '
    .. 'with next_ms > tick_ms')
end

local stored = tonumber(redis.call('ZSCORE', due_set, name))
if stored ~= expected then return {ALREADY, ''} end
local now = now_ms()
if expected > now or tick > now then return {WRONG_STATE, ''} end

redis.call('ZADD', due_set, next_run, name)
redis.call('HSET', runs, name, tick)
local id = 'cron:' .. name .. ':' .. tick
if redis.call('EXISTS', job_prefix .. id) == 1 then return {DUPLICATE, id} end
local flat = {}
for j = 5, #ARGV do flat[#flat + 1] = ARGV[j] end
add_job(stream, delayed, stats, job_prefix, id, flat, now, now)
emit(KEYS[7], 'enqueued', id, 0, now)
redis.call('HINCRBY', stats, 'enqueued', 1)
redis.call('HINCRBY', stats, 'cron_ticks', 1)
return {OK, id}
