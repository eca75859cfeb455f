#!lua
--[[
  remove_job_scheduler: delete a job scheduler, and its current iteration if that is delayed
  (one already waiting or prioritized still runs once, as in BullMQ).

  KEYS: repeat wait prioritized delayed id pc marker events meta active
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  scheduler id
  Returns: 1 if the scheduler existed, else 0.
  Transitions: UNSCHEDULE
]]
--- @include "common"
--- @include "scheduler"

local sid = ARGV[2]
local prev = redis.call('ZSCORE', K['repeat'], sid)
if prev then
  local id = iteration_id(sid, tonumber(prev))
  if unschedule(id, true) then
    emit('removed', 'jobId', id, 'prev', 'delayed')
  end
end
if redis.call('ZREM', K['repeat'], sid) == 0 then
  return 0
end
redis.call('DEL', scheduler_key(sid))
return 1
