-- fail: a failed attempt: XACK + XDEL, attempts+1, then immediate re-XADD, backoff into
-- delayed, or the dead stream.
-- KEYS[1] stream
-- KEYS[2] delayed
-- KEYS[3] dead
-- KEYS[4] stats
-- KEYS[5] job_prefix
-- ARGV[1] group
-- ARGV[2] consumer
-- ARGV[3] entry_id
-- ARGV[4] job_id
-- ARGV[5] error
-- ARGV[6] traceback
-- ARGV[7] mode
-- ARGV[8] retry_after_ms
-- ARGV[9] max_attempts
-- ARGV[10] immediate_retries
-- ARGV[11] backoff_base_ms
-- ARGV[12] backoff_cap_ms
-- ARGV[13] jitter
-- ARGV[14] rand
-- mode: 'retry' (the policy decides), 'after' (retry in retry_after_ms), 'dead' (a
-- permanent error: no more attempts), 'malformed' (the entry breaks the wire format). The entry's own max_attempts field wins over ARGV[9].
-- Backoff after the immediate retries: min(cap, base * 2^k) * (1 - jitter * rand).
-- returns: {code, outcome, attempts, due_at_ms}; outcome is 'retry', 'delayed' or 'dead'
-- codes: OK NOT_OWNER NOT_FOUND WRONG_STATE
--@include codes
--@include common
local stream, delayed, dead, stats, job_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, consumer, entry, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local err, tb, mode = ARGV[5], ARGV[6], ARGV[7]

if not owns(stream, group, entry, consumer) then return {NOT_OWNER} end
local flat = read_entry(stream, entry)
if flat == nil then
  redis.call('XACK', stream, group, entry)
  return {NOT_FOUND}
end
local key = job_prefix .. id
ensure_record(key, entry, flat)
if redis.call('HGET', key, 'state') ~= 'waiting' then return {WRONG_STATE} end

local now = now_ms()
local attempts = redis.call('HINCRBY', key, 'attempts', 1)
redis.call('XACK', stream, group, entry)
redis.call('XDEL', stream, entry)
redis.call('HSET', key, 'error', err, 'traceback', tb, 'updated_at', now)
set_field(flat, 'id', id)
set_field(flat, 'attempts', tostring(attempts))

local max_attempts = tonumber(get_field(flat, 'max_attempts') or '') or tonumber(ARGV[9])
local reasons = {dead = 'permanent', malformed = 'malformed'}
if reasons[mode] or attempts >= max_attempts then
  local reason = reasons[mode] or 'attempts exhausted'
  dead_letter(dead, stats, key, id, flat, reason, err, tb, attempts, now)
  return {OK, 'dead', attempts, 0}
end

local delay
if mode == 'after' then
  delay = tonumber(ARGV[8])
elseif attempts <= tonumber(ARGV[10]) then
  delay = 0
else
  local k = attempts - tonumber(ARGV[10]) - 1
  delay = math.min(tonumber(ARGV[12]), tonumber(ARGV[11]) * 2 ^ k)
  delay = math.floor(delay * (1 - tonumber(ARGV[13]) * tonumber(ARGV[14])))
end
redis.call('HINCRBY', stats, 'retried', 1)
if delay <= 0 then
  local new_entry = redis.call('XADD', stream, '*', unpack(flat))
  redis.call('HSET', key, 'entry', new_entry)
  return {OK, 'retry', attempts, now}
end
local due = now + delay
redis.call('HSET', key, 'state', 'delayed', 'entry', '', 'due_at', due)
stash_fields(key, flat)
redis.call('ZADD', delayed, due, id)
return {OK, 'delayed', attempts, due}
