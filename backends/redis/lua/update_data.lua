#!lua
--[[
  update_data: replace a job's data, in any state, lock or not (BullMQ's updateData).

  KEYS: (none)
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
    3  data (JSON)
  Returns: 0, or -1 if the job does not exist.
  Transitions: none
]]
--- @include "common"

local key = job_key(ARGV[2])
if redis.call('EXISTS', key) == 0 then
  return -1
end
redis.call('HSET', key, 'data', ARGV[3])
return 0
