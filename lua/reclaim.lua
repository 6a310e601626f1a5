-- reclaim: take over entries idle past the visibility timeout (their worker died or hung).
-- Entries already delivered more than max_deliveries times are poison: dead-lettered.
-- The rest are claimed by the caller, which runs them.
-- KEYS[1] stream
-- KEYS[2] dead
-- KEYS[3] stats
-- KEYS[4] job_prefix
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
  if n > max_deliveries then
    now = now or now_ms()
    local id = job_id_of(entry, flat)
    local key = job_prefix .. id
    ensure_record(key, entry, flat)
    local attempts = redis.call('HGET', key, 'attempts') or '0'
    redis.call('XACK', stream, group, entry)
    redis.call('XDEL', stream, entry)
    set_field(flat, 'id', id)
    local reason = 'poison: delivered ' .. (n - 1) .. ' times without finishing'
    dead_letter(dead, stats, key, id, flat, POISON, reason, '', attempts, now)
    out[2] = out[2] + 1
  else
    out[#out + 1] = entry; out[#out + 1] = flat; out[#out + 1] = n
    claimed = claimed + 1
  end
end
if claimed > 0 then redis.call('HINCRBY', stats, 'reclaimed', claimed) end
return out
