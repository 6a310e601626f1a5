-- release: hand unfinished entries back (shutdown) without spending an attempt: each is
-- re-added at the stream's tail (written first), then leaves the caller's pending list and
-- the stream. An entry that breaks the wire format, or reuses another job's id, is
-- dead-lettered instead (malformed, duplicate id): it could never run.
-- KEYS[1] stream
-- KEYS[2] dead
-- KEYS[3] stats
-- KEYS[4] job_prefix
-- ARGV[1] group
-- ARGV[2] consumer
-- ARGV[3...] entry_id, job_id  (repeated)
-- moves: running -> waiting, dead
-- returns: {code} per entry
-- codes: OK NOT_OWNER NOT_FOUND
--@include codes
--@include failures
--@include now_ms
--@include fields
--@include read_entry
--@include owns
--@include ensure_record
--@include entry_problem
--@include own_record
--@include job_id_of
--@include dead_letter
--@include slots
local stream, dead, stats, job_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer = ARGV[1], ARGV[2]
local out = {}
local released = 0

local function release_one(entry, id)
  local flat = read_entry(stream, entry)
  if not owns(stream, group, entry, consumer) then return NOT_OWNER end
  if flat == nil then
    redis.call('XACK', stream, group, entry)
    return NOT_FOUND
  end
  local problem = entry_problem(flat)
  if problem then id = job_id_of(entry, flat) end  -- the caller may have read a repeated id
  local key, duplicate = own_record(job_prefix, entry, id)
  if duplicate then id = entry end
  ensure_record(key, entry, flat)
  if not duplicate then free_slots(job_prefix, key, id, redis.call('HGET', key, 'slots'), now_ms()) end
  if duplicate or problem then
    local reason = problem and MALFORMED or DUPLICATE_ID
    local err = problem and ('malformed entry: ' .. problem) or 'its job id belongs to another job'
    local attempts = redis.call('HGET', key, 'attempts') or '0'
    dead_letter(dead, stats, key, id, flat, reason, err, '', attempts, now_ms())
  else
    if get_field(flat, 'id') == nil then set_field(flat, 'id', id) end
    local new_entry = redis.call('XADD', stream, '*', unpack(flat))
    redis.call('HSET', key, 'entry', new_entry)
    released = released + 1
  end
  redis.call('XACK', stream, group, entry)
  redis.call('XDEL', stream, entry)
  return OK
end

for i = 3, #ARGV, 2 do
  out[#out + 1] = release_one(ARGV[i], ARGV[i + 1])
end
if released > 0 then redis.call('HINCRBY', stats, 'released', released) end
return out
