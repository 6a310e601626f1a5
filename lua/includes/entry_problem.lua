--@include valid_job_id
--@include max_fields
-- Why an entry breaks the wire format, or nil: the rules of
-- streamjobs.contract.entry_problem (field count, repeated names, payload present, id,
-- integers of at most 15 digits, timeout a positive decimal, a known dedup_mode). Payload JSON is Python's.
local INTEGER_MINIMUM = {attempts = 0, max_attempts = 1, enqueued_at = 0, expires_at = 0,
  expires_in = 0, dedup_ttl = 0}
local DEDUP_MODES = {throttle = true, debounce = true, unique = true}
local DECIMAL_FIELDS = {timeout = true}

local function shown(value)
  return "'" .. string.sub(value, 1, 40) .. "'"
end

local function bad_number(name, value)
  local minimum = INTEGER_MINIMUM[name]
  if minimum ~= nil then
    if #value > 15 or not string.find(value, '^%d+$') or tonumber(value) < minimum then
      return name .. ' ' .. shown(value) .. ' is not an integer >= ' .. minimum ..
        ' of at most 15 digits'
    end
  elseif DECIMAL_FIELDS[name] then
    local whole, frac = string.match(value, '^(%d+)%.?(%d*)$')
    local point = string.find(value, '.', 1, true) ~= nil
    if whole == nil or #whole > 9 or #frac > 9 or (point and #frac == 0)
        or tonumber(value) <= 0 then
      return name .. ' ' .. shown(value) .. ' is not a positive decimal (at most 9 digits each side)'
    end
  end
  return nil
end

local function entry_problem(flat)
  if #flat > MAX_FIELDS * 2 then
    return 'entry has ' .. (#flat / 2) .. ' fields, over the limit of ' .. MAX_FIELDS
  end
  local seen = {}
  for i = 1, #flat, 2 do
    local name, value = flat[i], flat[i + 1]
    if seen[name] then return 'field ' .. shown(name) .. ' appears more than once' end
    seen[name] = true
    if name == 'id' and not valid_job_id(value) then
      return 'id ' .. shown(value) .. ' is not 1-128 printable ASCII characters without spaces'
    end
    if name == 'dedup_mode' and not DEDUP_MODES[value] then
      return 'dedup_mode ' .. shown(value) .. ' is not throttle, debounce or unique'
    end
    local problem = bad_number(name, value)
    if problem then return problem end
  end
  if not seen['payload'] then return 'entry has no payload field' end
  return nil
end
