#!lua
--[[
  limit_settings: the queue's rate-limit window and limit settings (Queue.rate_limit,
  get_rate_limit_ttl, remove_rate_limit_key, set/get/remove of the meta fields max, duration
  and concurrency). Lifting a limit sets the marker when jobs are ready, so that a waiting
  worker fetches at once.

  KEYS: limiter meta active wait prioritized marker
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  operation: "rate_limit" | "ttl" | "remove_window" | "set_meta" | "get_meta" | "del_meta"
    3.. rate_limit: counter, ttl (ms); ttl: max_jobs or "0"; set_meta: field, value, ...;
        get_meta / del_meta: field, ...
  Returns: ttl: ms (-2 no window, -1 no TTL, 0 below the max); remove_window: 1 or 0;
    get_meta: the values (nil where absent); otherwise 0.
  Transitions: none (settings and the window counter only)
]]
--- @include "common"
--- @include "limits"

local op = ARGV[2]
if op == 'rate_limit' then
  redis.call('SET', K.limiter, ARGV[3], 'PX', ARGV[4])
  return 0
elseif op == 'ttl' then
  local limit = tonumber(ARGV[3])
  if not limit or limit <= 0 then
    limit = tonumber(redis.call('HGET', K.meta, 'max'))
  end
  if not limit then
    return redis.call('PTTL', K.limiter)
  end
  local count = tonumber(redis.call('GET', K.limiter))
  if count and count >= limit then
    return redis.call('PTTL', K.limiter)
  end
  return 0
elseif op == 'remove_window' then
  local removed = redis.call('DEL', K.limiter)
  wake()
  return removed
elseif op == 'set_meta' then
  redis.call('HSET', K.meta, unpack(ARGV, 3))
  wake()
  return 0
elseif op == 'get_meta' then
  return redis.call('HMGET', K.meta, unpack(ARGV, 3))
elseif op == 'del_meta' then
  redis.call('HDEL', K.meta, unpack(ARGV, 3))
  wake()
  return 0
end
return redis.error_reply('limit_settings: unknown operation ' .. tostring(op))
