#!lua
--[[
  set_paused: pause or resume fetching. Pausing deletes the marker so that blocked workers
  stay asleep; resuming sets it again for ready jobs and for the next delayed job.

  KEYS: wait prioritized delayed marker events meta
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  "1" to pause, "0" to resume
  Returns: 1 if the state changed, else 0.
  Transitions: none (paused jobs stay where they are)
]]
--- @include "common"

local pause = ARGV[2] == '1'
if is_paused() == pause then
  return 0
end
if pause then
  redis.call('HSET', K.meta, 'paused', '1')
  redis.call('DEL', K.marker)
  emit('paused')
else
  redis.call('HDEL', K.meta, 'paused')
  if redis.call('LLEN', K.wait) > 0 or redis.call('ZCARD', K.prioritized) > 0 then
    signal('0', 0)
  end
  local due = next_due()
  if due then
    signal('1', due)
  end
  emit('resumed')
end
return 1
