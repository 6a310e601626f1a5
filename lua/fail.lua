-- fail: a batch of failed attempts. Each: attempts+1, then an immediate re-XADD, backoff
-- into delayed, or the dead stream; XACK + XDEL of the old entry last.
-- KEYS[1] stream
-- KEYS[2] delayed
-- KEYS[3] dead
-- KEYS[4] stats
-- KEYS[5] job_prefix
-- KEYS[6] events
-- ARGV[1] group
-- ARGV[2] consumer
-- ARGV[3] max_attempts
-- ARGV[4] immediate_retries
-- ARGV[5] backoff_base_ms
-- ARGV[6] backoff_cap_ms
-- ARGV[7] jitter
-- ARGV[8...] entry_id, job_id, error, traceback, mode, retry_after_ms, rand, duration_ms, started
-- (per job; duration_ms: how long the attempt ran, as its worker measured it, -1 when it
-- did not run; started: 1 when the attempt's `started` event was not written yet: written
-- here, first). The attempt joins the record's `history`.
-- mode: 'retry' or 'timeout' (the policy decides), 'after' (retry in retry_after_ms),
-- 'permanent' (no more attempts), 'malformed' (the entry breaks the wire format),
-- 'duplicate id' (a foreign entry reusing another job's id). A mode that ends the job is
-- also its dead reason, and its entry's fields are kept as they came; else the reason is
-- 'attempts exhausted'. An entry the rules of entry_problem refuse is malformed whatever
-- the mode; one whose job id has another entry's record is a duplicate id, dead under its
-- own entry id (the other job's record is left alone).
-- The entry's own max_attempts field wins over ARGV[3].
-- Backoff after the immediate retries: min(cap, base * 2^k) * (1 - jitter * rand).
-- moves: running -> waiting, delayed, dead
-- returns: {code, state, attempts, due_at_ms} per job
-- state is where the job went ('' when the code is not OK)
-- codes: OK NOT_OWNER NOT_FOUND WRONG_STATE
--@include codes
--@include states
--@include failures
--@include now_ms
--@include fields
--@include read_entry
--@include stash
--@include ensure_record
--@include dead_letter
--@include entry_problem
--@include own_record
--@include held_entries
--@include slots
--@include emit
--@include history
local stream, delayed, dead, stats, job_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local events = KEYS[6]
local group, consumer = ARGV[1], ARGV[2]
local policy_max = tonumber(ARGV[3])
local immediate = tonumber(ARGV[4])
local base, cap, jitter = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local ends_job = {[PERMANENT] = true, [MALFORMED] = true, [DUPLICATE_ID] = true}
local now = now_ms()
local held = held_entries(stream, group, consumer, ARGV, 8, 9)
local out = {}
local retried = 0

-- The new place is written first, the entry deleted last: an error mid-script (Redis does
-- not roll back) can leave a job twice, never nowhere.
local function settle_entry(entry)
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
end

local function next_delay(mode, attempts, retry_after, rand)
  if mode == AFTER then return retry_after end
  if attempts <= immediate then return 0 end
  local delay = math.min(cap, base * 2 ^ (attempts - immediate - 1))
  return math.floor(delay * (1 - jitter * rand))
end

local function fail_one(entry, id, err, tb, mode, retry_after, rand, duration, started)
  if not held[entry] then return {NOT_OWNER, '', 0, 0} end
  held[entry] = nil
  local flat = read_entry(stream, entry)
  if flat == nil then
    redis.call('XACK', stream, group, entry)
    return {NOT_FOUND, '', 0, 0}
  end
  local problem = entry_problem(flat)
  if problem and not ends_job[mode] then
    mode, err = MALFORMED, 'malformed entry: ' .. problem
  end
  local key, duplicate = own_record(job_prefix, entry, id)
  if duplicate then
    mode, err, tb, id = DUPLICATE_ID, 'job id ' .. id .. ' belongs to another job', '', entry
  end
  ensure_record(key, entry, flat)
  local rec = redis.call('HMGET', key, 'state', 'attempts', 'history', 'slots')
  if rec[1] ~= RUNNING_RECORDED_AS then return {WRONG_STATE, '', 0, 0} end
  free_slots(job_prefix, key, id, rec[4], now)  -- no command for a job without slots
  local attempts = math.floor(tonumber(rec[2]) or 0) + 1
  local started_at = duration >= 0 and now - duration or nil
  if started == '1' then
    emit(events, 'started', id, attempts, started_at or now, 'consumer', consumer)
  end

  if not ends_job[mode] then  -- a job that ends keeps its entry's fields as they came
    if get_field(flat, 'id') == nil then set_field(flat, 'id', id) end
    set_field(flat, 'attempts', tostring(attempts))
  end
  local max_attempts = tonumber(get_field(flat, 'max_attempts') or '') or policy_max
  emit(events, 'failed', id, attempts, now, 'error', err)
  if ends_job[mode] or attempts >= max_attempts then
    local reason = ends_job[mode] and mode or EXHAUSTED
    dead_letter(dead, stats, key, id, flat, reason, err, tb, attempts, now)
    redis.call('HSET', key, 'history',
      history_with(rec[3], attempts, started_at, consumer, now, DEAD, err))
    emit(events, 'dead', id, attempts, now, 'reason', reason, 'error', err)
    settle_entry(entry)
    return {OK, DEAD, attempts, 0}
  end

  local delay = next_delay(mode, attempts, retry_after, rand)
  redis.call('HSET', key, 'history',
    history_with(rec[3], attempts, started_at, consumer, now, 'retrying', err))
  retried = retried + 1
  if delay <= 0 then
    local new_entry = redis.call('XADD', stream, '*', unpack(flat))
    redis.call('HSET', key, 'entry', new_entry, 'attempts', attempts, 'error', err,
      'traceback', tb, 'updated_at', now)
    settle_entry(entry)
    emit(events, 'retrying', id, attempts, now, 'due_at', now)
    return {OK, WAITING, attempts, now}
  end
  local due = now + delay
  stash_fields(key, flat)
  redis.call('HSET', key, 'state', DELAYED, 'entry', '', 'due_at', due, 'attempts', attempts,
    'error', err, 'traceback', tb, 'updated_at', now)
  redis.call('ZADD', delayed, due, id)
  settle_entry(entry)
  emit(events, 'retrying', id, attempts, now, 'due_at', due)
  return {OK, DELAYED, attempts, due}
end

for i = 8, #ARGV, 9 do
  local res = fail_one(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
    tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7]), ARGV[i + 8])
  for _, v in ipairs(res) do out[#out + 1] = v end
end
if retried > 0 then redis.call('HINCRBY', stats, 'retried', retried) end
return out
