-- stop: entries this consumer holds that end without running to completion, or the check
-- before one starts. Per entry, `action`:
--   'start': about to run an entry that carries `expires_at` or `dedup_key`. Its
--     expires_at has come (and it never started: first delivery, no failed attempt): it
--     ends expired (never runs). A plain XADD entry (no record
--     yet) with a `dedup_key` whose job is active (by its mode; debounce counts as
--     unique here) ends cancelled, reason `deduplicated`; else it takes the key. Otherwise
--     the state is running: run it. When the type has concurrency limits (max_running,
--     max_running_per_key > 0) it then takes a slot in each of its scopes
--     (lua/includes/slots.lua); over a limit it is parked instead: state delayed, no
--     attempt spent, its entry settled, queued for the next freed slot. Before that, a
--     type with a rate limit (per type, per limit_key) counts the start in a sliding
--     window; over the rate it is delayed until the window allows it (no attempt spent).
--   'cancel': its cancel was asked (cancel.lua): it ends cancelled, never retried.
--   'hold': its cancel was asked but the attempt cannot be stopped (a sync handler in a
--     thread): the record's `cancel` field says so; the job stays running.
-- An ended entry leaves the pending list and the stream (XACK + XDEL), its dedup key and
-- slots are freed and its record kept for result_ttl_ms.
-- KEYS[1] stream
-- KEYS[2] stats
-- KEYS[3] expired
-- KEYS[4] cancels
-- KEYS[5] job_prefix
-- KEYS[6] events
-- ARGV[1] group
-- ARGV[2] consumer
-- ARGV[3] result_ttl_ms
-- ARGV[4] max_running  (0: no limit)
-- ARGV[5] max_running_per_key  (0: no limit; the key is the entry's limit_key)
-- ARGV[6] lease_ms  (a slot's lease, and a parked job's fallback due time)
-- ARGV[7] rate  (starts of the type per rate_period_ms; 0: no rate limit)
-- ARGV[8] rate_period_ms
-- ARGV[9] key_rate  (starts per key_rate_period_ms of each limit_key; 0: none)
-- ARGV[10] key_rate_period_ms
-- ARGV[11...] entry_id, job_id, action  (repeated per entry)
-- moves: running -> expired, cancelled, delayed
-- returns: {code, state} per entry
-- state: expired, cancelled, delayed (parked by a limit), or running (start it / still
-- running); '' when refused
-- codes: OK NOT_OWNER NOT_FOUND WRONG_STATE
--@include codes
--@include states
--@include now_ms
--@include fields
--@include read_entry
--@include owns
--@include ensure_record
--@include own_record
--@include expire_job
--@include deliveries
--@include dedup
--@include free_unique
--@include slots
--@include stash
--@include emit
--@include dependents
local stream, stats, expired, cancels, job_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local events = KEYS[6]
local group, consumer, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local max_running, max_per_key = tonumber(ARGV[4]), tonumber(ARGV[5])
local lease = tonumber(ARGV[6])
local rate, rate_period = tonumber(ARGV[7]), tonumber(ARGV[8])
local key_rate, key_period = tonumber(ARGV[9]), tonumber(ARGV[10])
local base = string.sub(job_prefix, 1, -5)
local now = now_ms()

local function settle_entry(entry)
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
end

local function end_cancelled(key, id, reason, attempt)
  free_unique(key, id)
  free_slots(job_prefix, key, id, redis.call('HGET', key, 'slots'), now)
  redis.call('ZREM', cancels, id)
  redis.call('HSET', key, 'state', CANCELLED, 'entry', '', 'reason', reason,
    'finished_at', now, 'updated_at', now)
  notify_dependents(job_prefix, id, CANCELLED)
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) else redis.call('DEL', key) end
  emit(events, 'cancelled', id, attempt, now, 'reason', reason)
end

-- Park a job over a limit of `scope`: its fields stashed in the record, delayed with a
-- fallback due time (a lost hand-off cannot strand it), queued in the scope's held list.
local function park(entry, key, id, flat, scope)
  if get_field(flat, 'id') == nil then set_field(flat, 'id', id) end
  stash_fields(key, flat)
  local due = now + lease
  redis.call('HSET', key, 'state', DELAYED, 'entry', '', 'due_at', due, 'held', scope,
    'held_lease', lease, 'updated_at', now)
  redis.call('ZADD', delayed_key(job_prefix), due, id)
  redis.call('RPUSH', base .. 'held:' .. scope, id)
  redis.call('HINCRBY', stats, 'held', 1)
  settle_entry(entry)
end

-- Take a slot in each of the job's scopes (one it holds already, reserved by a hand-off
-- or from an earlier delivery, is renewed). A scope with jobs parked before this one
-- hands its free slots to them first. Returns the scope that refused it (its slots taken
-- here given back), or nil when it holds them all.
local function take_slots(key, id, flat)
  local scopes = {}
  if max_running > 0 then scopes[#scopes + 1] = {'@', max_running} end
  local lk = get_field(flat, 'limit_key')
  if max_per_key > 0 and lk then  -- the record lists scopes space-separated
    scopes[#scopes + 1] = {'k:' .. string.gsub(lk, '%s', '_'), max_per_key}
  end
  local taken = {}
  for _, s in ipairs(scopes) do
    local scope, limit = s[1], s[2]
    local slots = base .. 'slots:' .. scope
    if not redis.call('ZSCORE', slots, id) then
      redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)  -- lost jobs' leases
      local n = redis.call('ZCARD', slots)
      local list = base .. 'held:' .. scope
      while n < limit and redis.call('LLEN', list) > 0 do
        if hand_off(job_prefix, scope, now) then n = n + 1 end
      end
      if n >= limit then
        for _, t in ipairs(taken) do
          if redis.call('ZREM', base .. 'slots:' .. t, id) == 1 then hand_off(job_prefix, t, now) end
        end
        redis.call('HDEL', key, 'slots')
        return scope
      end
    end
    redis.call('ZADD', slots, now + lease, id)
    taken[#taken + 1] = scope
  end
  if #taken > 0 then redis.call('HSET', key, 'slots', table.concat(taken, ' ')) end
  return nil
end

-- Rate limits: a scope's starts are the sorted set `<prefix>:{T}:rate:<scope>` (members
-- `<ms>:<id>` by server ms), trimmed to the period: a sliding window, so no window of the
-- period holds more starts than the limit. Milliseconds until a start is allowed in every
-- scope of the job; 0: allowed, and counted in each.
local function rate_wait(id, flat)
  local scopes = {}
  if rate > 0 then scopes[#scopes + 1] = {base .. 'rate:@', rate, rate_period} end
  local lk = get_field(flat, 'limit_key')
  if key_rate > 0 and lk then
    scopes[#scopes + 1] = {base .. 'rate:k:' .. string.gsub(lk, '%s', '_'), key_rate, key_period}
  end
  local wait = 0
  for _, s in ipairs(scopes) do
    local log, limit, period = s[1], s[2], s[3]
    -- A handler's RateLimited holds the scope back (the worker sets rate_hold:<scope>).
    local held = redis.call('PTTL', base .. 'rate_hold:' .. string.sub(log, #base + 6))
    if held > 0 then wait = math.max(wait, held) end
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - period)
    if redis.call('ZCARD', log) >= limit then
      local oldest = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
      wait = math.max(wait, tonumber(oldest[2]) + period - now + 1)
    end
  end
  if wait > 0 then return wait end
  for _, s in ipairs(scopes) do
    redis.call('ZADD', s[1], now, now .. ':' .. id)
    redis.call('PEXPIRE', s[1], s[3])
  end
  return 0
end

-- Hold a job over a rate back until `due`: delayed (its fields stashed in the record), no
-- attempt spent, its entry settled; the promoter brings it back then.
local function defer(entry, key, id, flat, due)
  if get_field(flat, 'id') == nil then set_field(flat, 'id', id) end
  stash_fields(key, flat)
  redis.call('HSET', key, 'state', DELAYED, 'entry', '', 'due_at', due, 'updated_at', now)
  redis.call('ZADD', delayed_key(job_prefix), due, id)
  redis.call('HINCRBY', stats, 'rate_limited', 1)
  settle_entry(entry)
end

local function stop_one(entry, id, action)
  if not owns(stream, group, entry, consumer) then return {NOT_OWNER, ''} end
  local flat = read_entry(stream, entry)
  if flat == nil then
    redis.call('XACK', stream, group, entry)
    return {NOT_FOUND, ''}
  end
  local key, duplicate = own_record(job_prefix, entry, id)
  if duplicate then return {WRONG_STATE, ''} end  -- the worker dead-letters it
  local fresh = redis.call('EXISTS', key) == 0
  ensure_record(key, entry, flat)
  local rec = redis.call('HMGET', key, 'state', 'attempts')
  local state = rec[1]
  if state ~= RUNNING_RECORDED_AS then return {WRONG_STATE, state} end
  if action == 'hold' then
    redis.call('HSET', key, 'cancel', 'uninterruptible')
    return {OK, RUNNING}
  elseif action == 'cancel' then
    end_cancelled(key, id, 'cancelled while running', math.floor(tonumber(rec[2]) or 0) + 1)
    redis.call('HINCRBY', stats, 'cancelled', 1)
    settle_entry(entry)
    return {OK, CANCELLED}
  end
  -- A delivery after the first may have started (its worker died running it): it runs.
  if is_expired(flat, now) and deliveries(stream, group, entry) <= 1 then
    expire_job(key, id, expired, stats, ttl, now)
    emit(events, 'expired', id, 0, now)
    settle_entry(entry)
    return {OK, EXPIRED}
  end
  local dkey = get_field(flat, 'dedup_key')
  if fresh and dkey then
    local dd = dedup_helpers(stream, job_prefix)
    local dk = dd.key_of(dkey)
    local mode = get_field(flat, 'dedup_mode') or 'unique'
    if mode == 'debounce' then mode = 'unique' end
    local other = dd.holder(dk, mode)
    if other and other ~= id then
      end_cancelled(key, id, 'deduplicated: job ' .. other .. ' holds its dedup_key', 0)
      redis.call('HINCRBY', stats, 'deduplicated', 1)
      settle_entry(entry)
      return {OK, CANCELLED}
    end
    dd.take(dk, mode, tonumber(get_field(flat, 'dedup_ttl') or ''), key, id)
  end
  if rate > 0 or key_rate > 0 then
    local wait = rate_wait(id, flat)
    if wait > 0 then
      defer(entry, key, id, flat, now + wait)
      return {OK, DELAYED}
    end
  end
  if max_running > 0 or max_per_key > 0 then
    local scope = take_slots(key, id, flat)
    if scope then
      park(entry, key, id, flat, scope)
      return {OK, DELAYED}
    end
  end
  return {OK, RUNNING}
end

local out = {}
for i = 11, #ARGV, 3 do
  local res = stop_one(ARGV[i], ARGV[i + 1], ARGV[i + 2])
  out[#out + 1] = res[1]; out[#out + 1] = res[2]
end
return out
