-- reclaim: take over entries idle past the visibility timeout (their worker died or hung).
-- Entries already delivered more than max_deliveries times are poison: dead-lettered (the
-- dead entry written first, the entry deleted last). So are entries that break the wire
-- format (malformed) or reuse another job's id (duplicate id: dead under their own entry
-- id, the other job's record left alone). The rest are claimed by the caller, which runs
-- them.
-- KEYS[1] stream
-- KEYS[2] dead
-- KEYS[3] stats
-- KEYS[4] job_prefix
-- KEYS[5] events
-- ARGV[1] group
-- ARGV[2] consumer
-- ARGV[3] min_idle_ms
-- ARGV[4] count
-- ARGV[5] max_deliveries
-- moves: running -> running, dead
-- returns: {code, dead_count}, then {entry_id, fields, deliveries} per claimed entry
-- codes: OK
--@include codes
--@include failures
--@include now_ms
--@include fields
--@include deliveries
--@include job_id_of
--@include ensure_record
--@include dead_letter
--@include entry_problem
--@include own_record
--@include emit
local stream, dead, stats, job_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer = ARGV[1], ARGV[2]
local max_deliveries = tonumber(ARGV[5])
local res = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[3], '0-0', 'COUNT', ARGV[4])
local out = {OK, 0}
local now = nil
local claimed = 0
for _, e in ipairs(res[2]) do
  local entry, flat = e[1], e[2]
  -- XAUTOCLAIM counted this delivery; the pending list holds the total.
  local n = deliveries(stream, group, entry)
  local id = job_id_of(entry, flat)
  local key, duplicate = own_record(job_prefix, entry, id)
  if duplicate then id = entry end
  local problem = entry_problem(flat)
  if problem or duplicate or n > max_deliveries then
    now = now or now_ms()
    ensure_record(key, entry, flat)
    local attempts = redis.call('HGET', key, 'attempts') or '0'
    local reason = (problem and MALFORMED) or (duplicate and DUPLICATE_ID) or POISON
    local err = 'poison: delivered ' .. (n - 1) .. ' times without finishing'
    if problem then
      err = 'malformed entry: ' .. problem
    elseif duplicate then
      err = 'its job id belongs to another job'
    elseif get_field(flat, 'id') == nil then
      set_field(flat, 'id', id)
    end
    dead_letter(dead, stats, key, id, flat, reason, err, '', attempts, now)
    emit(KEYS[5], 'dead', id, attempts, now, 'reason', reason, 'error', err)
    -- No worker settles it: a webhook notice for the next sweep of any worker of the type
    -- (`at` 0: taken over at once; engine/webhooks.py drops it if no webhook wants it).
    redis.call('HSET', string.sub(job_prefix, 1, -5) .. 'webhook_outbox', entry,
      cjson.encode({job = id, url = get_field(flat, 'webhook') or cjson.null, at = 0}))
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
    out[2] = out[2] + 1
  else
    out[#out + 1] = entry; out[#out + 1] = flat; out[#out + 1] = n
    claimed = claimed + 1
  end
end
if claimed > 0 then redis.call('HINCRBY', stats, 'reclaimed', claimed) end
return out
