-- ack: complete a batch of entries: XACK + XDEL, state completed, result, retention, counters.
-- KEYS[1] stream
-- KEYS[2] stats
-- KEYS[3] done
-- KEYS[4] job_prefix
-- KEYS[5] events
-- ARGV[1] group
-- ARGV[2] consumer
-- ARGV[3] result_ttl_ms
-- ARGV[4...] entry_id, job_id, result, attempt, max_attempts, duration_ms, started
-- (repeated per job; result '' when none; attempt: this attempt's number, 1-based;
-- max_attempts: the one it ran under; duration_ms: how long the attempt ran, as its
-- worker measured it, -1 when unknown; started: 1 when the attempt's `started` event was
-- not written yet (the worker batches them with its settles): written here, first)
-- The record keeps the attempt's duration_ms; its `history` is appended by failures only
-- (a completed attempt is read back from the record's own fields: streamjobs.status).
-- An entry the consumer no longer owns (it was reclaimed) is left alone: no completion,
-- no count; ALREADY when this consumer completed the job with this entry (a replayed ack). A record in
-- another state than running, or of another entry (a duplicate id), is left alone too:
-- WRONG_STATE, and the caller dead-letters the entry through fail.
-- moves: running -> completed
-- returns: {code} per job
-- codes: OK NOT_OWNER WRONG_STATE ALREADY
--@include codes
--@include states
--@include now_ms
--@include held_entries
--@include emit
--@include free_unique
--@include slots
--@include dependents
local stream, stats, done, job_prefix, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, consumer, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()

local held = held_entries(stream, group, consumer, ARGV, 4, 7)

-- Every read first, then the writes: an error reply (a key that is no record) aborts the
-- call before it has written anything.
local out, entries, index, accepted, recs = {}, {}, {}, {}, {}
for i = 4, #ARGV, 7 do
  local entry, id = ARGV[i], ARGV[i + 1]
  local rec = redis.call('HMGET', job_prefix .. id, 'state', 'entry', 'finished_by', 'unique', 'slots',
    'dependents')
  local state, mine = rec[1], rec[2] == entry and rec[3] == consumer
  if not held[entry] then
    -- A replay of this very ack (its reply was lost) finds the job completed by it.
    out[#out + 1] = (state == COMPLETED and mine) and ALREADY or NOT_OWNER
  elseif state and state ~= RUNNING_RECORDED_AS and not (state == COMPLETED and mine) then
    out[#out + 1] = WRONG_STATE  -- the record is another entry's: a duplicate id
  elseif state and state == RUNNING_RECORDED_AS and rec[2] ~= entry then
    out[#out + 1] = WRONG_STATE
  else
    held[entry] = nil  -- the same entry twice in one batch counts once
    accepted[#accepted + 1] = i
    recs[i] = rec
    out[#out + 1] = OK
  end
end
for _, i in ipairs(accepted) do
  local entry, id, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local attempt, max_attempts, duration = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local key = job_prefix .. id
  entries[#entries + 1] = entry
  if ARGV[i + 6] == '1' then
    emit(events, 'started', id, attempt, now - math.max(0, tonumber(duration)),
      'consumer', consumer)
  end
  emit(events, 'completed', id, attempt, now)
  free_unique_key(recs[i][4], id)  -- read above: no command for a job without one
  free_slots(job_prefix, key, id, recs[i][5], now)
  notify_dependents(job_prefix, id, COMPLETED, recs[i][6])
  if ttl > 0 then
    if not recs[i][1] then  -- a plain XADD's first transition: its record starts here
      redis.call('HSET', key, 'enqueued_at', string.match(entry, '^(%d+)'))
    end
    if result == '' then
      redis.call('HSET', key, 'state', COMPLETED, 'entry', entry, 'finished_at', now,
        'finished_by', consumer, 'attempts', attempt, 'max_attempts', max_attempts,
        'duration_ms', duration)
    else
      redis.call('HSET', key, 'state', COMPLETED, 'entry', entry, 'finished_at', now,
        'finished_by', consumer, 'attempts', attempt, 'max_attempts', max_attempts,
        'result', result, 'duration_ms', duration)
    end
    redis.call('PEXPIRE', key, ttl)
    index[#index + 1] = now
    index[#index + 1] = id
  else
    redis.call('DEL', key)
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
