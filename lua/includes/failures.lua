-- Failure modes (fail.lua's ARGV mode) and dead reasons: one vocabulary, held against
-- streamjobs.contract.Failure by a test.
local RETRY = 'retry'
local AFTER = 'after'
local TIMEOUT = 'timeout'
local PERMANENT = 'permanent'
local MALFORMED = 'malformed'
local EXHAUSTED = 'attempts exhausted'
local POISON = 'poison'
local DUPLICATE_ID = 'duplicate id'
local PARENT_FAILED = 'parent failed'
