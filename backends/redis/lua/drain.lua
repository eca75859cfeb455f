#!lua flags=allow-oom
--[[
  drain: delete every job not yet started: wait and prioritized, and delayed when asked
  (BullMQ's drain). Active and finished jobs stay. No event, as BullMQ.

  KEYS: wait prioritized delayed
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  "1" to drain the delayed jobs too, else "0"
  Returns: the number of jobs deleted.
  allow-oom: deleting frees memory.
  Transitions: DRAIN
]]
--- @include "common"

local drained = 0
local function drain(key, state, ids)
  for _, id in ipairs(ids) do
    moved(id, 'DRAIN', state)
    redis.call('DEL', job_key(id), job_key(id) .. ':logs')
  end
  redis.call('DEL', key)
  drained = drained + #ids
end

-- BullMQ's order: wait, then delayed (when asked), then prioritized.
drain(K.wait, 'waiting', redis.call('LRANGE', K.wait, 0, -1))
if ARGV[2] == '1' then
  drain(K.delayed, 'delayed', redis.call('ZRANGE', K.delayed, 0, -1))
end
drain(K.prioritized, 'prioritized', redis.call('ZRANGE', K.prioritized, 0, -1))
return drained
