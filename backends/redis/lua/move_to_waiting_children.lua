#!lua
--[[
  move_to_waiting_children: a step job waits for its children (BullMQ's moveToWaitingChildren),
  if it has a pending one (with a child key: if that child is pending).

  KEYS: active stalled events waiting-children
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
    3  token
    4  child key, or "" for any child
    5  now (ms)
  Returns: 0 moved; 1 nothing pending (the job stays active); -1 missing, -9 a child failed
    with fail_parent_on_failure (both before the lock is checked), -2 / -3 / -6.
  Transitions: MOVE_TO_WAITING_CHILDREN
]]
--- @include "common"

local id, child, now = ARGV[2], ARGV[4], ARGV[5]
local key = job_key(id)
if redis.call('EXISTS', key) == 0 then
  return -1
end
if redis.call('ZCARD', key .. ':unsuccessful') > 0 then
  return -9
end
local pending
if child ~= '' then
  pending = redis.call('SISMEMBER', key .. ':dependencies', child) == 1
else
  pending = redis.call('SCARD', key .. ':dependencies') > 0
end
if not pending then
  return 1
end
local code = check_owner(id, ARGV[3])
if code ~= 0 then
  return code
end
drop_lock(id)
moved(id, 'MOVE_TO_WAITING_CHILDREN', 'active')
redis.call('ZADD', K.waiting_children, now, id)
emit('waiting-children', 'jobId', id, 'prev', 'active')
return 0
