-- Job states; held against streamjobs.contract.JobState by a test.
local WAITING = 'waiting'
local RUNNING = 'running'
local DELAYED = 'delayed'
local COMPLETED = 'completed'
local DEAD = 'dead'
local CANCELLED = 'cancelled'
local EXPIRED = 'expired'
local BLOCKED = 'blocked'
-- Delivery (XREADGROUP) is the move to running and no script sees it, so a running job's
-- record says waiting; the group's pending list tells the two apart.
local RUNNING_RECORDED_AS = WAITING
