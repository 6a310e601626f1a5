--@include states
--@include fields
--@include free_unique
--@include slots
--@include dependents
-- Expiry before start: a job whose `expires_at` (ms, server clock) has come never runs.
-- A job that already ran an attempt (its entry counts failed ones) is past its start:
-- its retries are not expired.
local function is_expired(flat, now)
  local at = tonumber(get_field(flat, 'expires_at') or '')
  if at == nil or at > now then return false end
  local attempts = get_field(flat, 'attempts')
  return attempts == nil or attempts == '0'
end

-- End such a job: state expired, in the type's expired index for the result retention
-- (ttl ms; 0 keeps no record), counted. The caller removes its entry or delayed member.
local function expire_job(key, id, expired, stats, ttl, now)
  free_unique(key, id)
  free_slots(string.sub(key, 1, #key - #id), key, id, redis.call('HGET', key, 'slots'), now)
  redis.call('HSET', key, 'state', EXPIRED, 'entry', '', 'finished_at', now, 'updated_at', now)
  notify_dependents(string.sub(key, 1, #key - #id), id, EXPIRED)
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
    redis.call('ZADD', expired, now, id)
    redis.call('ZREMRANGEBYSCORE', expired, '-inf', now - ttl)
  else
    redis.call('DEL', key)
  end
  redis.call('HINCRBY', stats, 'expired', 1)
end
