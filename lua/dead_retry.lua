-- dead_retry: move dead jobs back to the stream (their priority level's) with a fresh set
-- of attempts.
-- KEYS[1] stream
-- KEYS[2] dead
-- KEYS[3] stats
-- KEYS[4] job_prefix
-- KEYS[5] events
-- ARGV[1...] job_id  (repeated)
-- moves: dead -> waiting
-- returns: {code} per job
-- codes: OK NOT_FOUND WRONG_STATE
--@include codes
--@include states
--@include now_ms
--@include fields
--@include read_entry
--@include stash_prefix
--@include emit
--@include lane
local stream, dead, stats, job_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()
local out = {}
local moved = 0
for i = 1, #ARGV do
  local id = ARGV[i]
  local key = job_prefix .. id
  local state = redis.call('HGET', key, 'state')
  if not state then
    out[#out + 1] = NOT_FOUND
  elseif state ~= DEAD then
    out[#out + 1] = WRONG_STATE
  else
    local dead_entry = redis.call('HGET', key, 'dead_entry')
    local stored = read_entry(dead, dead_entry) or {}
    local flat = strip_stashed(stored)
    if #flat == 0 then
      out[#out + 1] = NOT_FOUND
    else
      set_field(flat, 'attempts', '0')
      set_field(flat, 'id', id)  -- the record's id (a malformed or duplicate one had another)
      local entry = add_to_lane(stream, key, flat)
      redis.call('HSET', key, 'state', WAITING, 'entry', entry, 'attempts', 0,
        'updated_at', now)
      redis.call('HDEL', key, 'dead_entry', 'reason', 'finished_at')
      redis.call('XDEL', dead, dead_entry)
      moved = moved + 1
      emit(KEYS[5], 'dead_retried', id, 0, now)
      out[#out + 1] = OK
    end
  end
end
if moved > 0 then
  redis.call('HINCRBY', stats, 'dead_retried', moved)
end
return out
