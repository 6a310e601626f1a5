-- Attempts a record's history keeps (contract.HISTORY_LENGTH).
local HISTORY_LENGTH = 25
