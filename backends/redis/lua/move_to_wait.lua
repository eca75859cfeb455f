#!lua
--[[
  move_to_wait: a processor hit a rate limit (RateLimitError): its job goes back to the front
  of wait, or ahead of every job of its priority, without counting an attempt (BullMQ's
  moveJobFromActiveToWait; `ats` already counted the activation).

  KEYS: wait active prioritized stalled limiter marker events meta
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
    3  token
  Returns: {code, ttl}: code 0 or the owner-check code (-1, -2, -3, -6, nothing changed); ttl
    the window's remaining PTTL, 0 if none.
  Transitions: RATE_LIMITED, RATE_LIMITED_PRIORITIZED
]]
--- @include "common"
--- @include "limits"

local id = ARGV[2]
local code = check_owner(id, ARGV[3])
if code ~= 0 then
  return {code, 0}
end
drop_lock(id)
local priority = tonumber(redis.call('HGET', job_key(id), 'priority') or '0') or 0
if priority > 0 then
  moved(id, 'RATE_LIMITED_PRIORITIZED', 'active')
  redis.call('ZADD', K.prioritized, num(priority * 4294967296), id)
else
  moved(id, 'RATE_LIMITED', 'active')
  redis.call('RPUSH', K.wait, id)
end
wake()
emit('waiting', 'jobId', id, 'prev', 'active')
local ttl = redis.call('PTTL', K.limiter)
if ttl < 0 then
  ttl = 0
end
return {0, ttl}
