-- ack: complete a batch of entries: XACK + XDEL, state completed, result, retention, counters.
-- KEYS[1] stream
-- KEYS[2] stats
-- KEYS[3] done
-- KEYS[4] job_prefix
-- ARGV[1] group
-- ARGV[2] consumer
-- ARGV[3] result_ttl_ms
-- ARGV[4...] entry_id, job_id, result  (repeated per job; result '' when none)
-- An entry the consumer no longer owns (it was reclaimed) is left alone: no completion,
-- no count. A record in another state than running is left alone too.
-- moves: running -> completed
-- returns: {code} per job
-- codes: OK NOT_OWNER WRONG_STATE
--@include codes
--@include states
--@include now_ms
--@include held_entries
local stream, stats, done, job_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()

local held = held_entries(stream, group, consumer, ARGV, 4, 3)

local out, entries, index = {}, {}, {}
for i = 4, #ARGV, 3 do
  local entry, id, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = job_prefix .. id
  local state = redis.call('HGET', key, 'state')
  if not held[entry] then
    out[#out + 1] = NOT_OWNER
  elseif state and state ~= RUNNING_RECORDED_AS then
    out[#out + 1] = WRONG_STATE
  else
    held[entry] = nil  -- the same entry twice in one batch counts once
    entries[#entries + 1] = entry
    if ttl > 0 then
      if not state then  -- a plain XADD's first transition: its record starts here
        redis.call('HSET', key, 'enqueued_at', string.match(entry, '^(%d+)'))
      end
      if result == '' then
        redis.call('HSET', key, 'state', COMPLETED, 'finished_at', now)
      else
        redis.call('HSET', key, 'state', COMPLETED, 'finished_at', now, 'result', result)
      end
      redis.call('PEXPIRE', key, ttl)
      index[#index + 1] = now
      index[#index + 1] = id
    else
      redis.call('DEL', key)
    end
    out[#out + 1] = OK
  end
end
if #entries > 0 then
  redis.call('XACK', stream, group, unpack(entries))
  redis.call('XDEL', stream, unpack(entries))
  redis.call('HINCRBY', stats, 'completed', #entries)
  if #index > 0 then
    redis.call('ZADD', done, unpack(index))
    redis.call('ZREMRANGEBYSCORE', done, '-inf', now - ttl)
  end
end
return out
