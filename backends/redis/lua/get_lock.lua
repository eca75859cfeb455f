#!lua flags=no-writes
--[[
  get_lock: a job's lock token and its PTTL, read in one atomic step.

  KEYS: active
    (unused by the script: a key routes the call to the queue's node in Redis Cluster)
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
  Returns: {token, pttl_ms}, or {} when the job holds no lock.
  Transitions: none (read only)
]]

local key = base .. ARGV[2] .. ':lock'
local token = redis.call('GET', key)
if not token then
  return {}
end
return {token, redis.call('PTTL', key)}
