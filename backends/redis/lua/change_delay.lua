#!lua
--[[
  change_delay: re-schedule a delayed job to now + delay (BullMQ's changeDelay).

  KEYS: delayed marker events meta
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
    3  delay (ms, from now)
    4  now (ms)
  Returns: 0; -1 if the job does not exist, -3 if it is not delayed (nothing changed).
  Transitions: CHANGE_DELAY
]]
--- @include "common"

local id = ARGV[2]
local delay = tonumber(ARGV[3])
local key = job_key(id)
if redis.call('EXISTS', key) == 0 then
  return -1
end
if redis.call('ZREM', K.delayed, id) == 0 then
  return -3
end
redis.call('HSET', key, 'delay', ARGV[3])
moved(id, 'CHANGE_DELAY', 'delayed')
local due = tonumber(ARGV[4]) + delay
push_delayed(id, due)
emit('delayed', 'jobId', id, 'delay', num(due))
return 0
