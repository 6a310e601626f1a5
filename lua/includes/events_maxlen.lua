-- Approximate cap of a type's events stream (contract.EVENTS_MAXLEN).
local EVENTS_MAXLEN = 10000
