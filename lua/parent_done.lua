-- parent_done: a parent (`parent_ref`, "<tag>/<id>") of the blocked job `job_id` ended in
-- `parent_state` (completed, dead, cancelled, expired; `gone` when its record is no more).
-- Idempotent: the record keeps each parent that ended (`dep:<ref>` -> state, `depr:<ref>`
-- -> a completed parent's result), so a parent told twice counts once. A failed parent
-- applies the job's `on_parent_failure`: fail (default) dead-letters the job, drop cancels
-- it (reason `parent failed`, its own dependents told in turn), run counts it as ended.
-- The last parent to end moves the job to its level's stream with `parent_results` and
-- `parent_states` (JSON objects by parent ref) among its fields.
-- KEYS[1] stream
-- KEYS[2] stats
-- KEYS[3] dead
-- KEYS[4] blocked
-- KEYS[5] job_prefix
-- KEYS[6] events
-- ARGV[1] job_id
-- ARGV[2] parent_ref
-- ARGV[3] parent_state
-- ARGV[4] parent_result  ('' when none)
-- ARGV[5] result_ttl_ms
-- moves: blocked -> blocked, waiting, dead, cancelled
-- returns: {code, state}
-- state: the job's state after the call ('' when NOT_FOUND)
-- codes: OK NOT_FOUND WRONG_STATE ALREADY
--@include codes
--@include states
--@include failures
--@include now_ms
--@include fields
--@include stash
--@include stash_prefix
--@include call_chunked
--@include dead_letter
--@include dependents
--@include lane
--@include emit
local stream, stats, dead, blocked, job_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local events = KEYS[6]
local id, ref, pstate, presult = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl = tonumber(ARGV[5])
local key = job_prefix .. id
local rec = redis.call('HMGET', key, 'state', 'f:on_parent_failure')
if not rec[1] then return {NOT_FOUND, ''} end
if rec[1] ~= BLOCKED then return {WRONG_STATE, rec[1]} end
if redis.call('HSETNX', key, 'dep:' .. ref, pstate) == 0 then return {ALREADY, BLOCKED} end
local now = now_ms()
local why = 'parent ' .. ref .. ' ended ' .. pstate

if pstate == COMPLETED then
  if presult ~= '' then redis.call('HSET', key, 'depr:' .. ref, presult) end
elseif rec[2] ~= 'run' then
  local flat = unstash_fields(key)
  redis.call('ZREM', blocked, id)
  if rec[2] == 'drop' then
    redis.call('HSET', key, 'state', CANCELLED, 'reason', PARENT_FAILED, 'error', why,
      'finished_at', now, 'updated_at', now)
    notify_dependents(job_prefix, id, CANCELLED)
    if ttl > 0 then redis.call('PEXPIRE', key, ttl) else redis.call('DEL', key) end
    redis.call('HINCRBY', stats, 'cancelled', 1)
    emit(events, 'cancelled', id, 0, now, 'reason', PARENT_FAILED)
    return {OK, CANCELLED}
  end
  dead_letter(dead, stats, key, id, flat, PARENT_FAILED, why, '', 0, now)
  emit(events, 'dead', id, 0, now, 'error', why, 'reason', PARENT_FAILED)
  return {OK, DEAD}
end

if redis.call('HINCRBY', key, 'deps_left', -1) > 0 then return {OK, BLOCKED} end

-- Every parent has ended: the job starts, with what its parents left.
local function quoted(s)
  return '"' .. string.gsub(string.gsub(s, '\\', '\\\\'), '"', '\\"') .. '"'
end
local results, states = {}, {}
local all = redis.call('HGETALL', key)
local found = {}
for i = 1, #all, 2 do found[all[i]] = all[i + 1] end
for name, value in pairs(found) do
  if string.sub(name, 1, 4) == 'dep:' then
    local r = string.sub(name, 5)
    results[#results + 1] = quoted(r) .. ':' .. (found['depr:' .. r] or 'null')
    states[#states + 1] = quoted(r) .. ':' .. quoted(value)
  end
end
local flat, names = strip_stashed(all)
set_field(flat, 'parent_results', '{' .. table.concat(results, ',') .. '}')
set_field(flat, 'parent_states', '{' .. table.concat(states, ',') .. '}')
local entry = add_to_lane(stream, key, flat)
redis.call('HSET', key, 'state', WAITING, 'entry', entry, 'updated_at', now)
names[#names + 1] = 'deps_left'
call_chunked('HDEL', key, names)
redis.call('ZREM', blocked, id)
emit(events, 'unblocked', id, 0, now)
return {OK, WAITING}
