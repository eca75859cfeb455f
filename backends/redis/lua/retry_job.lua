#!lua
--[[
  retry_job: a finished job (completed or failed) back to be fetched again (BullMQ's
  reprocessJob). There is no lock to check: a finished job holds none.

  KEYS: wait prioritized completed failed pc marker events meta active
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
    3  the state it finished in: "completed" or "failed"
    4  "1" to clear atm (attempts made), else "0"
    5  "1" to clear ats (attempts started), else "0"
  Returns: 0; -1 if the job does not exist, -3 if it is not in that state (nothing changed).
  Kept: stacktrace, stc, delay, progress, logs (as BullMQ).
  A child is pending in its parent again (the "flows" include's child_retried).
  Transitions: REPROCESS REPROCESS_PRIORITIZED
]]
--- @include "common"
--- @include "flows"

local id = ARGV[2]
local state = ARGV[3]
local key = job_key(id)
if redis.call('EXISTS', key) == 0 then
  return -1
end
if (state ~= 'completed' and state ~= 'failed') or redis.call('ZREM', K[state], id) == 0 then
  return -3
end
local outcome = 'returnvalue'
if state == 'failed' then
  outcome = 'failedReason'
end
redis.call('HDEL', key, 'finishedOn', 'processedOn', outcome)
if ARGV[4] == '1' then
  redis.call('HDEL', key, 'atm')
end
if ARGV[5] == '1' then
  redis.call('HDEL', key, 'ats')
end
child_retried(id, state)
make_ready(id, state, 'REPROCESS', 'REPROCESS_PRIORITIZED', job_opts(id).lifo == true)
emit('waiting', 'jobId', id, 'prev', state)
return 0
