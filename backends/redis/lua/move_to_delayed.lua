#!lua
--[[
  move_to_delayed: a step job delays itself (BullMQ's moveToDelayed with skipAttempt): the
  owner's active job goes to delayed until now + delay, no attempt counted.

  KEYS: active delayed stalled marker events meta
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
    3  token
    4  delay (ms)
    5  now (ms)
  Returns: 0, or -1 / -2 / -3 / -6 (nothing changed).
  Transitions: MOVE_TO_DELAYED
]]
--- @include "common"

local id, delay, now = ARGV[2], ARGV[4], tonumber(ARGV[5])
local code = check_owner(id, ARGV[3])
if code ~= 0 then
  return code
end
drop_lock(id)
redis.call('HSET', job_key(id), 'delay', delay)
moved(id, 'MOVE_TO_DELAYED', 'active')
local due = now + tonumber(delay)
push_delayed(id, due)
emit('delayed', 'jobId', id, 'delay', num(due))
return 0
