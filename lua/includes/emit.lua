--@include events_maxlen
-- Append one event (contract.Event) to the type's events stream: the job's id, the
-- attempt's number and the server time, then any extra field/value pairs.
local function emit(events, name, id, attempt, now, ...)
  redis.call('XADD', events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'event', name, 'id', id,
    'attempt', attempt, 'at', now, ...)
end
