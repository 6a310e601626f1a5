-- release: hand unfinished entries back (shutdown) without spending an attempt: each is
-- re-added at the stream's tail and leaves the caller's pending list.
-- KEYS[1] stream
-- KEYS[2] stats
-- KEYS[3] job_prefix
-- ARGV[1] group
-- ARGV[2] consumer
-- ARGV[3...] entry_id, job_id  (repeated)
-- moves: running -> waiting
-- returns: {code} per entry
-- codes: OK NOT_OWNER NOT_FOUND
--@include codes
--@include fields
--@include read_entry
--@include owns
--@include ensure_record
local stream, stats, job_prefix = KEYS[1], KEYS[2], KEYS[3]
local group, consumer = ARGV[1], ARGV[2]
local out = {}
local released = 0
for i = 3, #ARGV, 2 do
  local entry, id = ARGV[i], ARGV[i + 1]
  local flat = read_entry(stream, entry)
  if not owns(stream, group, entry, consumer) then
    out[#out + 1] = NOT_OWNER
  elseif flat == nil then
    redis.call('XACK', stream, group, entry)
    out[#out + 1] = NOT_FOUND
  else
    local key = job_prefix .. id
    ensure_record(key, entry, flat)
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
    set_field(flat, 'id', id)
    local new_entry = redis.call('XADD', stream, '*', unpack(flat))
    redis.call('HSET', key, 'entry', new_entry)
    released = released + 1
    out[#out + 1] = OK
  end
end
if released > 0 then redis.call('HINCRBY', stats, 'released', released) end
return out
