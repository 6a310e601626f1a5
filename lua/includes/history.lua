--@include history_length
-- A record's history with one more attempt: newline-separated JSON objects (attempt,
-- started_at, duration_ms, worker, outcome, error), the last HISTORY_LENGTH kept. `old`
-- is the field as read (false when none), `started_at` the attempt's start (or false).
local function history_with(old, attempt, started_at, worker, now, outcome, err)
  local start = tonumber(started_at)
  local item = cjson.encode({attempt = tonumber(attempt), started_at = start,
    duration_ms = start and (now - start) or nil, worker = worker, outcome = outcome,
    error = (err ~= '' and err) or nil})
  if not old or old == '' then return item end
  local _, n = string.gsub(old, '\n', '\n')
  if n + 1 >= HISTORY_LENGTH then old = string.sub(old, string.find(old, '\n', 1, true) + 1) end
  return old .. '\n' .. item
end
