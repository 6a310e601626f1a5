-- Helpers shared by the transitions. Job fields are kept as a flat Lua array
-- {name1, value1, name2, value2, ...}, exactly as XADD takes and XRANGE returns them,
-- so payloads stay byte-exact (no JSON round trip inside Lua).

-- The server clock, in ms: one clock for every worker.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function get_field(flat, name)
  for i = 1, #flat, 2 do
    if flat[i] == name then return flat[i + 1] end
  end
  return nil
end

local function set_field(flat, name, value)
  for i = 1, #flat, 2 do
    if flat[i] == name then flat[i + 1] = value; return end
  end
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end

-- The fields of one stream entry, or nil when it no longer exists.
local function read_entry(stream, entry_id)
  local rows = redis.call('XRANGE', stream, entry_id, entry_id)
  if #rows == 0 then return nil end
  return rows[1][2]
end

-- Does `consumer` hold `entry_id` in the group's pending list? (XACK alone takes no consumer.)
local function owns(stream, group, entry_id, consumer)
  local p = redis.call('XPENDING', stream, group, entry_id, entry_id, 1, consumer)
  return #p > 0
end

-- Times `entry_id` was delivered, 0 when it is not pending.
local function deliveries(stream, group, entry_id)
  local p = redis.call('XPENDING', stream, group, entry_id, entry_id, 1)
  if #p == 0 then return 0 end
  return tonumber(p[1][4])
end

-- Job fields kept in a record while no entry carries them (delayed, dead) are stored
-- in the record hash under 'f:<name>'.
local function stash_fields(key, flat)
  local args = {}
  for i = 1, #flat, 2 do
    args[#args + 1] = 'f:' .. flat[i]
    args[#args + 1] = flat[i + 1]
  end
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
end

-- Read back and remove the stashed fields; returns the flat field list.
local function unstash_fields(key)
  local all = redis.call('HGETALL', key)
  local flat, names = {}, {}
  for i = 1, #all, 2 do
    local name = all[i]
    if string.sub(name, 1, 2) == 'f:' then
      flat[#flat + 1] = string.sub(name, 3)
      flat[#flat + 1] = all[i + 1]
      names[#names + 1] = name
    end
  end
  if #names > 0 then redis.call('HDEL', key, unpack(names)) end
  return flat
end

-- The job record's key for an entry: the producer's `id` field, else the entry id.
local function job_id_of(entry_id, flat)
  local id = get_field(flat, 'id')
  if id == nil or id == '' then return entry_id end
  return id
end

-- A job written by a plain XADD gets its record at its first transition.
local function ensure_record(key, entry_id, flat)
  if redis.call('EXISTS', key) == 0 then
    local ms = string.match(entry_id, '^(%d+)')
    local attempts = tonumber(get_field(flat, 'attempts') or '0') or 0
    redis.call('HSET', key, 'state', 'waiting', 'entry', entry_id,
      'enqueued_at', ms, 'attempts', attempts)
  end
end

-- Move a job to the dead stream. `flat` is its fields; the record keeps the error.
local function dead_letter(dead, stats, key, job_id, flat, reason, err, tb, attempts, now)
  local args = {'id', job_id, 'reason', reason, 'error', err, 'attempts', attempts,
    'failed_at', now}
  for i = 1, #flat, 2 do
    args[#args + 1] = 'f:' .. flat[i]
    args[#args + 1] = flat[i + 1]
  end
  local dead_id = redis.call('XADD', dead, '*', unpack(args))
  redis.call('HSET', key, 'state', 'dead', 'dead_entry', dead_id, 'entry', '',
    'reason', reason, 'error', err, 'traceback', tb, 'attempts', attempts,
    'finished_at', now, 'updated_at', now)
  redis.call('PERSIST', key)
  redis.call('HINCRBY', stats, 'dead', 1)
  return dead_id
end

-- Stream ids compare as (ms, seq) pairs of integers, not as strings.
local function stream_id_less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end

-- The entries of a batch that `consumer` holds, as a set: one XPENDING over the range
-- from the lowest to the highest entry id of the batch (bounded by what the consumer
-- holds). ARGV[first], ARGV[first + step], ... are the batch's entry ids.
local function held_entries(stream, group, consumer, argv, first, step)
  if #argv < first then return {} end
  local lo, hi = argv[first], argv[first]
  for i = first, #argv, step do
    local e = argv[i]
    if stream_id_less(e, lo) then lo = e end
    if stream_id_less(hi, e) then hi = e end
  end
  local held = {}
  for _, p in ipairs(redis.call('XPENDING', stream, group, lo, hi, 1000000, consumer)) do
    held[p[1]] = true
  end
  return held
end
