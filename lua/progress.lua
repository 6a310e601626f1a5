-- progress: a running attempt's progress and log lines. Written into the job's record
-- when it has one (a plain XADD's job has none yet: its lines are not kept), and a
-- progress event when progress is given.
-- KEYS[1] job_prefix
-- KEYS[2] events
-- ARGV[1] job_id
-- ARGV[2] attempt
-- ARGV[3] progress  ('' when only log lines are written)
-- ARGV[4] message
-- ARGV[5] max_lines  (the record keeps the last max_lines lines)
-- ARGV[6...] line  (repeated: log lines, no newlines in them)
-- moves: none
-- returns: {code}
-- codes: OK
--@include codes
--@include now_ms
--@include emit
local job_prefix, events = KEYS[1], KEYS[2]
local id, attempt, progress, message = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_lines = tonumber(ARGV[5])
local key = job_prefix .. id
local now = now_ms()
if redis.call('EXISTS', key) == 1 then
  if progress ~= '' then
    redis.call('HSET', key, 'progress', progress, 'progress_message', message)
  end
  if #ARGV >= 6 then
    local lines = {}
    local old = redis.call('HGET', key, 'logs')
    if old then
      for line in string.gmatch(old, '[^\n]+') do lines[#lines + 1] = line end
    end
    for i = 6, #ARGV do lines[#lines + 1] = ARGV[i] end
    local first = math.max(1, #lines - max_lines + 1)
    redis.call('HSET', key, 'logs', table.concat(lines, '\n', first, #lines))
  end
end
if progress ~= '' then
  emit(events, 'progress', id, attempt, now, 'progress', progress, 'message', message)
end
return {OK}
