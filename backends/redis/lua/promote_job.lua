#!lua
--[[
  promote_job: a delayed job made ready now, its delay set to 0 (BullMQ's promote).

  KEYS: wait prioritized delayed pc marker events meta active
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
  Returns: 0; -3 if the job is not delayed (or does not exist), nothing changed.
  Transitions: PROMOTE PROMOTE_PRIORITIZED
]]
--- @include "common"

local id = ARGV[2]
if redis.call('ZREM', K.delayed, id) == 0 then
  return -3
end
promote(id)
return 0
