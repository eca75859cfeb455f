#!lua
--[[
  update_progress: store a job's progress and log a "progress" event.

  KEYS: events
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
    3  progress (JSON)
  Returns: 0, or -1 if the job does not exist.
  Transitions: none
]]
--- @include "common"

local id = ARGV[2]
local key = job_key(id)
if redis.call('EXISTS', key) == 0 then
  return -1
end
redis.call('HSET', key, 'progress', ARGV[3])
emit('progress', 'jobId', id, 'data', ARGV[3])
return 0
