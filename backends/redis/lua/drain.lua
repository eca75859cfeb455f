#!lua flags=allow-oom
--[[
  drain: delete every job not yet started: wait and prioritized, and delayed when asked
  (BullMQ's drain). Active and finished jobs stay. No event, as BullMQ.

  Each job goes as BullMQ's hard path does (the "removal" include): its deduplication key
  released, and a parent in this queue left with no pending child deleted with it.

  KEYS: wait prioritized delayed stalled waiting-children
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  "1" to drain the delayed jobs too, else "0"
  Returns: the number of jobs deleted.
  allow-oom: deleting frees memory.
  Transitions: DRAIN, DELETE_PARENT, RELEASE_PARENT (a parent in another queue)
]]
--- @include "common"
--- @include "dedup"
--- @include "flows"
--- @include "removal"

local drained = 0
local function drain(key, state, ids)
  redis.call('DEL', key)
  for _, id in ipairs(ids) do
    delete_job(id, state, 'DRAIN', true)
  end
  drained = drained + #ids
end

drain(K.wait, 'waiting', redis.call('LRANGE', K.wait, 0, -1))
drain(K.prioritized, 'prioritized', redis.call('ZRANGE', K.prioritized, 0, -1))
if ARGV[2] == '1' then
  drain(K.delayed, 'delayed', redis.call('ZRANGE', K.delayed, 0, -1))
end
return drained
