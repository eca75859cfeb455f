#!lua
--[[
  update_job_scheduler: store a scheduler's next iteration once its current one was activated.

  KEYS: repeat wait prioritized delayed id pc marker events meta active
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  scheduler id
    3  producer id: the job just activated
    4  next slot (ms) of a pattern scheduler, or "" for an every scheduler (computed here)
    5  the next iteration's opts (JSON) without jobId, delay, timestamp
    6  now (ms, the caller's clock)
  Returns: the new iteration's id; nil when the scheduler is gone, the producer is not its
    current iteration (the guard against making one twice), or the slot's id is taken (event
    "duplicated").
  Transitions: SCHEDULE, SCHEDULE_PRIORITIZED, SCHEDULE_DELAYED
]]
--- @include "common"
--- @include "scheduler"

local sid = ARGV[2]
local now = tonumber(ARGV[6])
local prev = redis.call('ZSCORE', K['repeat'], sid)
if not prev then
  return nil
end
prev = tonumber(prev)
local skey = scheduler_key(sid)
local hash = redis.call('HMGET', skey, 'name', 'data', 'every', 'startDate', 'offset')
local opts = cjson.decode(ARGV[5])
local every = tonumber(hash[3])
if not every and type(opts['repeat']) == 'table' then
  every = tonumber(opts['repeat']['every'])
end
local next_ms = tonumber(ARGV[4])
if every then
  local offset
  next_ms, offset = every_next(prev, every, now, tonumber(hash[5]) or 0, tonumber(hash[4]))
  if not hash[5] then
    redis.call('HSET', skey, 'offset', num(offset))
  end
end
if not next_ms or (ARGV[3] ~= iteration_id(sid, prev) and not PLANTED['scheduler-no-guard']) then
  return nil
end
local id = iteration_id(sid, next_ms)
if redis.call('EXISTS', job_key(id)) == 1 then
  emit('duplicated', 'jobId', id)
  return nil
end
redis.call('ZADD', K['repeat'], num(next_ms), sid)
redis.call('HINCRBY', skey, 'ic', 1)
store_iteration(sid, next_ms, hash[1] or sid, hash[2] or '{}', opts, now)
return id
