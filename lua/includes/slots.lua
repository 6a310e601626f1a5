--@include states
-- Concurrency limits (max_running, max_running_per_key). A running job holds a slot in
-- each scope it is limited in: '@' the type's (its hash tag's), 'k:<limit_key>' its key's;
-- a scope's slots are the sorted set `<prefix>:{T}:slots:<scope>` of job ids by lease end
-- (server ms: a lease past its end is a lost job's, dropped when a slot is next taken). A
-- job over a limit is parked: delayed (no attempt spent, a fallback due time) and queued
-- in the scope's held list `<prefix>:{T}:held:<scope>`; a freed slot is handed to the
-- list's first job still parked there (reserved for it, its due time brought to now), so
-- one key's jobs start in the order they were parked. The record's `slots` field names
-- the scopes a job holds (space-separated): every final transition frees them.
--
-- The delayed set's key is `<prefix>:{T}:delayed` (keys.TypeKeys.delayed): its suffix is
-- the state's name.
local function delayed_key(job_prefix)
  return string.sub(job_prefix, 1, -5) .. DELAYED
end

-- Hand a freed slot of `scope` to the first job still parked in its held list (its
-- lease: the one it was parked with); true when one got it. Pops at least one id.
local function hand_off(job_prefix, scope, now)
  local base = string.sub(job_prefix, 1, -5)
  local list = base .. 'held:' .. scope
  while true do
    local next_id = redis.call('LPOP', list)
    if not next_id then return false end
    local next_key = job_prefix .. next_id
    local rec = redis.call('HMGET', next_key, 'state', 'held', 'held_lease')
    if rec[1] == DELAYED and rec[2] == scope then
      redis.call('ZADD', base .. 'slots:' .. scope, now + (tonumber(rec[3]) or 60000), next_id)
      redis.call('HSET', next_key, 'slots', scope, 'due_at', now)
      redis.call('HDEL', next_key, 'held')
      redis.call('ZADD', delayed_key(job_prefix), now, next_id)
      return true
    end
  end
end

-- Free the slots `scopes` (the record's `slots` field, read by the caller with its other
-- fields: no command for a job without one) and hand each to the next parked job.
local function free_slots(job_prefix, key, id, scopes, now)
  if not scopes or scopes == '' then return end
  local base = string.sub(job_prefix, 1, -5)
  for scope in string.gmatch(scopes, '%S+') do
    if redis.call('ZREM', base .. 'slots:' .. scope, id) == 1 then
      hand_off(job_prefix, scope, now)
    end
  end
  redis.call('HDEL', key, 'slots')
end
