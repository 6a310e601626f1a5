-- depend: register a blocked job (in another type or slot: `child_ref`, "<tag>/<id>") as
-- waiting for the parent `job_id` of this type. An active parent keeps the ref in its
-- dependents set and is marked (`dependents` 1): its end goes into the dependency outbox
-- (lua/includes/dependents.lua); its type's `deps_seen` is set (a day) so its workers relay
-- after their settles. A parent that has ended already answers its final state
-- and its result, and the caller passes them to the child (parent_done.lua). Idempotent.
-- KEYS[1] job_prefix
-- ARGV[1] job_id
-- ARGV[2] child_ref
-- moves: none
-- returns: {code, state, result}
-- state is the parent's ('' when NOT_FOUND); result '' unless it completed with one.
-- codes: OK NOT_FOUND ALREADY
--@include codes
--@include states
local job_prefix = KEYS[1]
local id, child = ARGV[1], ARGV[2]
local key = job_prefix .. id
local rec = redis.call('HMGET', key, 'state', 'result')
local state = rec[1]
if not state then return {NOT_FOUND, '', ''} end
if state == COMPLETED or state == DEAD or state == CANCELLED or state == EXPIRED then
  return {ALREADY, state, rec[2] or ''}
end
redis.call('SADD', string.sub(job_prefix, 1, -5) .. 'dependents:' .. id, child)
redis.call('SET', string.sub(job_prefix, 1, -5) .. 'deps_seen', 1, 'EX', 86400)
redis.call('HSET', key, 'dependents', 1)
return {OK, state, ''}
