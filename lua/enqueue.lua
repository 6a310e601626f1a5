-- enqueue: add a batch of jobs: duplicate check, job record, XADD now or ZADD delayed, counters.
-- KEYS[1] stream
-- KEYS[2] delayed
-- KEYS[3] stats
-- KEYS[4] job_prefix
-- KEYS[5] events  (may be left out: no enqueued events then)
-- KEYS[6] blocked  (may be left out with KEYS[5]: then a job with `depends_on` is refused)
-- ARGV[1...] job_id, token, delay_ms, run_at_ms, nfields, field, value, ...  (repeated per job)
-- job_id '' takes the entry id (or a generated id for a delayed job); run_at_ms 0 means none.
-- An id given is written into the entry as its `id` field, with `id_claimed 1` (the id is
-- this job's: the worker skips its duplicate-id read). token (or '') is the caller's
-- mark for this one enqueue: a replay of the same call (its reply was lost) finds its own
-- token in the record and is answered OK, not DUPLICATE.
-- A job with a `dedup_key` field (mode `dedup_mode`: unique by default, throttle or
-- debounce; window `dedup_ttl` ms) that another job answers for is not added: the reply
-- is DEDUPLICATED with that job's id and state (debounce first gives that job this one's
-- fields and start time). `expires_in` (ms) becomes `expires_at` on the server clock.
-- A `priority` of high or low puts the job in that level's stream (lua/includes/lane.lua).
-- A job with `depends_on` (a JSON list of "<tag>/<id>" parent refs, 1 to MAX_PARENTS) is
-- blocked: its fields stashed in its record with `deps_left`, its id in the blocked set,
-- no entry until parent_done.lua releases it (the caller then registers it with each
-- parent: depend.lua). Its delay, if any, is not kept.
-- The batch is checked before anything is written (an error reply, nothing enqueued): at
-- most MAX_JOB_FIELDS fields per job, ids by the contract's rule, numbers that are numbers.
-- moves: new -> waiting, delayed, blocked
-- returns: {code, job_id, state} per job
-- codes: OK DUPLICATE DEDUPLICATED
--@include codes
--@include now_ms
--@include add_job
--@include max_fields
--@include valid_job_id
--@include dedup
--@include states
--@include fields
--@include stash
--@include emit
--@include lane
local stream, delayed, stats, job_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local events = KEYS[5]
local MAX_PARENTS = 10000

-- The number of parent refs in a `depends_on` value, or nil when it is no such list.
local function parent_count(raw)
  local ok, refs = pcall(cjson.decode, raw)
  if not ok or type(refs) ~= 'table' or #refs < 1 or #refs > MAX_PARENTS then return nil end
  for _, ref in ipairs(refs) do
    if type(ref) ~= 'string' or not string.find(ref, '^[^/]+/.') then return nil end
  end
  return #refs
end

local function refuse(why)
  return redis.error_reply('ERR enqueue: ' .. why .. ' (nothing was enqueued)')
end

local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i + 4] or '')
  if not n or n < 1 or n > MAX_JOB_FIELDS or n % 1 ~= 0 then
    return refuse('a job has no field count in 1..' .. MAX_JOB_FIELDS)
  end
  if not tonumber(ARGV[i + 2]) or not tonumber(ARGV[i + 3]) then
    return refuse('delay_ms and run_at_ms must be numbers')
  end
  if ARGV[i] ~= '' and not valid_job_id(ARGV[i]) then
    return refuse('job id is not 1-128 printable ASCII characters without spaces')
  end
  if n > 1 then
    for j = i + 5, i + 4 + n * 2, 2 do
      local v = ARGV[j + 1]
      if ARGV[j] == 'priority' and v ~= 'high' and v ~= 'normal' and v ~= 'low' then
        return refuse('priority must be high, normal or low')
      end
      if ARGV[j] == 'depends_on' and not (KEYS[6] and parent_count(v)) then
        return refuse('depends_on must be a JSON list of 1-' .. MAX_PARENTS .. ' "<type>/<id>" refs')
      end
      if ARGV[j] == 'on_parent_failure' and v ~= 'fail' and v ~= 'run' and v ~= 'drop' then
        return refuse('on_parent_failure must be fail, run or drop')
      end
    end
  end
  i = i + 5 + n * 2
  if i > #ARGV + 1 then return refuse('the last job has fewer fields than its count') end
end

local now = now_ms()
local out = {}
local added, deduplicated = 0, 0

local dd  -- the dedup helpers, made for the first job that has a dedup_key
i = 1
while i <= #ARGV do
  local id, token = ARGV[i], ARGV[i + 1]
  local due = math.max(now + tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]))
  local n = tonumber(ARGV[i + 4])
  local flat = {}
  for j = i + 5, i + 4 + n * 2 do flat[#flat + 1] = ARGV[j] end
  i = i + 5 + n * 2
  local dk, mode, dttl
  if n > 1 then  -- options: a payload-only job skips the scans
    for j = 1, #flat, 2 do  -- expires_in becomes expires_at, in place
      if flat[j] == 'expires_in' and string.find(flat[j + 1], '^%d+$') then
        flat[j], flat[j + 1] = 'expires_at', string.format('%d', now + tonumber(flat[j + 1]))
      end
    end
    local dkey = get_field(flat, 'dedup_key')
    if dkey then
      dd = dd or dedup_helpers(stream, job_prefix)
      dk = dd.key_of(dkey)
      mode = get_field(flat, 'dedup_mode') or 'unique'
      dttl = tonumber(get_field(flat, 'dedup_ttl') or '')
    end
  end

  local other, ostate, oentry
  local rec = (id ~= '') and redis.call('HMGET', job_prefix .. id, 'state', 'token') or {}
  if dk and not rec[1] then other, ostate, oentry = dd.holder(dk, mode) end
  if rec[1] and token ~= '' and rec[2] == token then
    out[#out + 1] = OK; out[#out + 1] = id; out[#out + 1] = rec[1]
  elseif rec[1] then
    out[#out + 1] = DUPLICATE; out[#out + 1] = id; out[#out + 1] = rec[1]
  elseif other then
    if mode == 'debounce' then  -- `other` (not started) takes these fields and start time
      local key = job_prefix .. other
      set_field(flat, 'id', other)
      set_field(flat, 'id_claimed', '1')
      if ostate == DELAYED then
        unstash_fields(key)
      else
        redis.call('XDEL', lane_of(stream, redis.call('HGET', key, 'priority')), oentry)
      end
      if due > now then
        redis.call('HSET', key, 'state', DELAYED, 'entry', '', 'due_at', due, 'updated_at', now)
        stash_fields(key, flat)
        redis.call('ZADD', delayed, due, other)
        ostate = DELAYED
      else
        if ostate == DELAYED then
          redis.call('ZREM', delayed, other)
          redis.call('HDEL', key, 'due_at')
        end
        local new_entry = add_to_lane(stream, key, flat)
        redis.call('HSET', key, 'state', WAITING, 'entry', new_entry, 'updated_at', now)
        ostate = WAITING
      end
      dd.take(dk, mode, dttl, key, other)
      emit(events, 'debounced', other, 0, now, 'due_at', math.max(due, now))
    end
    deduplicated = deduplicated + 1
    out[#out + 1] = DEDUPLICATED; out[#out + 1] = other; out[#out + 1] = ostate
  elseif n > 1 and get_field(flat, 'depends_on') then
    if id == '' then id = now .. '-b' .. redis.call('HINCRBY', stats, 'seq', 1) end
    set_field(flat, 'id', id)
    set_field(flat, 'id_claimed', '1')
    local key = job_prefix .. id
    redis.call('HSET', key, 'state', BLOCKED, 'enqueued_at', now, 'updated_at', now,
      'deps_left', parent_count(get_field(flat, 'depends_on')))
    stash_fields(key, flat)
    redis.call('ZADD', KEYS[6], now, id)
    if token ~= '' then redis.call('HSET', key, 'token', token) end
    if dk then dd.take(dk, mode, dttl, key, id) end
    added = added + 1
    emit(events, 'enqueued', id, 0, now)
    out[#out + 1] = OK; out[#out + 1] = id; out[#out + 1] = BLOCKED
  else
    -- The record holds what no entry says: attempts appear with the first failure.
    local state
    id, state = add_job(stream, delayed, stats, job_prefix, id, flat, due, now)
    if token ~= '' then redis.call('HSET', job_prefix .. id, 'token', token) end
    if dk then dd.take(dk, mode, dttl, job_prefix .. id, id) end
    added = added + 1
    emit(events, 'enqueued', id, 0, now)
    out[#out + 1] = OK; out[#out + 1] = id; out[#out + 1] = state
  end
end
if added > 0 then redis.call('HINCRBY', stats, 'enqueued', added) end
if deduplicated > 0 then redis.call('HINCRBY', stats, 'deduplicated', deduplicated) end
return out
