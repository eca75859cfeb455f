#!lua
--[[
  change_priority: set a job's priority (BullMQ's changePriority). A waiting or prioritized
  job is queued again by it; a job anywhere else only gets the field. No event (as BullMQ).

  KEYS: wait prioritized pc marker meta active
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
    3  priority (0..2^21-1)
    4  "1" for lifo, else "0"
  Returns: 0, or -1 if the job does not exist.
  Transitions: CHANGE_PRIORITY CHANGE_PRIORITY_TO_WAIT
]]
--- @include "common"

local id = ARGV[2]
local priority = tonumber(ARGV[3])
local lifo = ARGV[4] == '1'
local key = job_key(id)
if redis.call('EXISTS', key) == 0 then
  return -1
end
redis.call('HSET', key, 'priority', ARGV[3])
local source
if redis.call('ZREM', K.prioritized, id) == 1 then
  source = 'prioritized'
elseif redis.call('LREM', K.wait, -1, id) == 1 then
  source = 'waiting'
else
  return 0
end
if priority == 0 then
  moved(id, 'CHANGE_PRIORITY_TO_WAIT', source)
  push_wait(id, lifo)
elseif lifo then
  -- As BullMQ: the front of its priority class, and no marker.
  moved(id, 'CHANGE_PRIORITY', source)
  redis.call('ZADD', K.prioritized, num(priority * 4294967296), id)
else
  moved(id, 'CHANGE_PRIORITY', source)
  push_prioritized(id, priority)
end
return 0
