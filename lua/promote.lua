-- promote: move due jobs from the delayed set to the stream (bounded batch, server clock);
-- a job of another priority level to its level's stream.
-- Safe to run from every worker at once: each id moves exactly once.
-- A due job whose `expires_at` has come ends expired instead (record kept result_ttl_ms).
-- KEYS[1] stream
-- KEYS[2] delayed
-- KEYS[3] stats
-- KEYS[4] expired
-- KEYS[5] job_prefix
-- KEYS[6] events  (an expired job's event; the move to waiting has none)
-- ARGV[1] limit
-- ARGV[2] result_ttl_ms
-- moves: delayed -> waiting, expired
-- returns: {code, moved, next_due_in_ms, orphans, expired_count}
-- next_due_in_ms is -1 when none; orphans: ids whose record was deleted from outside,
-- dropped from the set.
-- codes: OK
--@include codes
--@include states
--@include now_ms
--@include stash
--@include call_chunked
--@include expire_job
--@include emit
--@include lane
local stream, delayed, stats, expired, job_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ttl = tonumber(ARGV[2])
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local moved, orphans, expired_count = 0, 0, 0
for _, id in ipairs(ids) do
  local key = job_prefix .. id
  local flat, names = stashed_fields(key)
  if #flat == 0 then
    orphans = orphans + 1
  elseif is_expired(flat, now) then
    names[#names + 1] = 'due_at'
    call_chunked('HDEL', key, names)
    expire_job(key, id, expired, stats, ttl, now)
    emit(KEYS[6], 'expired', id, 0, now)
    expired_count = expired_count + 1
  else
    -- The entry first, the stash last: an error between them leaves the job twice.
    local entry = add_to_lane(stream, key, flat)
    redis.call('HSET', key, 'state', WAITING, 'entry', entry, 'updated_at', now)
    names[#names + 1] = 'due_at'
    call_chunked('HDEL', key, names)
    moved = moved + 1
  end
  redis.call('ZREM', delayed, id)
end
local nxt = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
local next_in = -1
if #nxt > 0 then next_in = math.max(0, tonumber(nxt[2]) - now) end
return {OK, moved, next_in, orphans, expired_count}
