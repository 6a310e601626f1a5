--@include events_maxlen
-- Append one event (contract.Event) to the type's events stream: the job's id, the
-- attempt's number and the server time, then any extra field/value pairs. A type whose
-- events key holds a string (contract.EVENTS_OFF) has its events switched off: nothing is
-- written (one TYPE per script call tells).
local events_on = nil
local function emit(events, name, id, attempt, now, ...)
  if not events then return end  -- a caller that passes no events key (enqueue's old form)
  if events_on == nil then events_on = redis.call('TYPE', events)['ok'] ~= 'string' end
  if not events_on then return end
  redis.call('XADD', events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'event', name, 'id', id,
    'attempt', attempt, 'at', now, ...)
end
