#!lua
--[[
  move_jobs_to_wait: up to `count` jobs of a finished or delayed set, scored at or before
  `timestamp`, go to the back of wait whatever their priority (BullMQ's moveJobsToWait, behind
  Queue.retry_jobs and Queue.promote_jobs). A finished job loses its finish fields; a promoted
  one keeps its `delay` field, as BullMQ's. A retried child is pending in its parent again
  (the "flows" include's child_retried).

  KEYS: wait completed failed delayed marker events meta active
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  count
    3  timestamp (the highest score moved)
    4  state: "completed", "failed" or "delayed"
  Returns: 1 when the batch was full (more may remain), else 0.
  Transitions: REPROCESS (completed, failed), PROMOTE (delayed)
]]
--- @include "common"
--- @include "flows"

local count = tonumber(ARGV[2])
local state = ARGV[4]
local source = K[state]
local ids = redis.call('ZRANGEBYSCORE', source, 0, ARGV[3], 'LIMIT', 0, count)
local cleared = {completed = 'returnvalue', failed = 'failedReason'}
local transition = 'PROMOTE'
if cleared[state] then
  transition = 'REPROCESS'
end
for _, id in ipairs(ids) do
  redis.call('ZREM', source, id)
  if cleared[state] then
    redis.call('HDEL', job_key(id), 'finishedOn', 'processedOn', cleared[state])
    child_retried(id, state)
  end
  moved(id, transition, state)
  redis.call('LPUSH', K.wait, id)
  emit('waiting', 'jobId', id, 'prev', state)
end
if #ids > 0 and may_signal() then
  signal('0', 0)
end
if count - #ids <= 0 then
  return 1
end
return 0
