-- enqueue: add a batch of jobs: duplicate check, job record, XADD now or ZADD delayed, counters.
-- KEYS[1] stream
-- KEYS[2] delayed
-- KEYS[3] stats
-- KEYS[4] job_prefix
-- ARGV[1...] job_id, delay_ms, run_at_ms, nfields, field, value, ...  (repeated per job)
-- job_id '' takes the entry id (or a generated id for a delayed job); run_at_ms 0 means none.
-- moves: new -> waiting, delayed
-- returns: {code, job_id, state} per job
-- codes: OK DUPLICATE
--@include codes
--@include states
--@include now_ms
--@include fields
--@include stash
local stream, delayed, stats, job_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
local out = {}
local added = 0
local i = 1
while i <= #ARGV do
  local id = ARGV[i]
  local due = math.max(now + tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]))
  local n = tonumber(ARGV[i + 3])
  local flat = {}
  for j = i + 4, i + 3 + n * 2 do flat[#flat + 1] = ARGV[j] end
  i = i + 4 + n * 2

  local state = (id ~= '') and redis.call('HGET', job_prefix .. id, 'state') or false
  if state then
    out[#out + 1] = DUPLICATE; out[#out + 1] = id; out[#out + 1] = state
  else
    -- The record holds what no entry says: attempts appear with the first failure.
    if due > now then
      if id == '' then
        id = now .. '-d' .. redis.call('HINCRBY', stats, 'seq', 1)
      end
      set_field(flat, 'id', id)
      local key = job_prefix .. id
      redis.call('HSET', key, 'state', DELAYED, 'due_at', due, 'enqueued_at', now)
      stash_fields(key, flat)
      redis.call('ZADD', delayed, due, id)
      state = DELAYED
    else
      local entry = redis.call('XADD', stream, '*', unpack(flat))
      if id == '' then id = entry end
      redis.call('HSET', job_prefix .. id, 'state', WAITING, 'entry', entry,
        'enqueued_at', now)
      state = WAITING
    end
    added = added + 1
    out[#out + 1] = OK; out[#out + 1] = id; out[#out + 1] = state
  end
end
if added > 0 then redis.call('HINCRBY', stats, 'enqueued', added) end
return out
