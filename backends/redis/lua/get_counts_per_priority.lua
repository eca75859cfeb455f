#!lua flags=no-writes
--[[
  get_counts_per_priority: for each priority, how many jobs wait at it: 0 counts the wait list,
  p > 0 the prioritized jobs scored within [p * 2^32, (p + 1) * 2^32 - 1] (BullMQ's
  getCountsPerPriority).

  KEYS: wait prioritized
  ARGV:
    1  base: "<prefix>:<queue>:"
    2... the priorities
  Returns: the counts, in the order of the priorities.
  Transitions: none
]]
--- @include "common"

local counts = {}
for i = 2, #ARGV do
  local priority = tonumber(ARGV[i])
  if priority == 0 then
    counts[#counts + 1] = redis.call('LLEN', K.wait)
  else
    counts[#counts + 1] = redis.call('ZCOUNT', K.prioritized, num(priority * 4294967296),
      num((priority + 1) * 4294967296 - 1))
  end
end
return counts
