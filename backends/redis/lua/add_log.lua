#!lua
--[[
  add_log: append a row to a job's log (the list `<job>:logs`), keeping the newest
  `keep_logs` rows when given (BullMQ's addLog).

  KEYS: (none)
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
    3  the row
    4  keep_logs, or "" to keep every row
  Returns: the number of rows kept, or -1 if the job does not exist.
  Transitions: none
]]
--- @include "common"

local id = ARGV[2]
if redis.call('EXISTS', job_key(id)) == 0 then
  return -1
end
local count = redis.call('RPUSH', logs_key(id), ARGV[3])
local keep = tonumber(ARGV[4])
if keep and keep > 0 then
  redis.call('LTRIM', logs_key(id), -keep, -1)
  return math.min(keep, count)
end
return count
