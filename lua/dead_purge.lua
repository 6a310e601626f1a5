-- dead_purge: delete dead jobs for good: their dead-stream entry and their record.
-- KEYS[1] dead
-- KEYS[2] stats
-- KEYS[3] job_prefix
-- ARGV[1...] job_id  (repeated)
-- moves: dead -> gone
-- returns: {code} per job
-- codes: OK NOT_FOUND WRONG_STATE
--@include codes
--@include states
local dead, stats, job_prefix = KEYS[1], KEYS[2], KEYS[3]
local out = {}
local purged = 0
for i = 1, #ARGV do
  local key = job_prefix .. ARGV[i]
  local rec = redis.call('HMGET', key, 'state', 'dead_entry')
  if not rec[1] then
    out[#out + 1] = NOT_FOUND
  elseif rec[1] ~= DEAD then
    out[#out + 1] = WRONG_STATE
  else
    redis.call('XDEL', dead, rec[2])
    redis.call('DEL', key)
    purged = purged + 1
    out[#out + 1] = OK
  end
end
if purged > 0 then redis.call('HINCRBY', stats, 'purged', purged) end
return out
