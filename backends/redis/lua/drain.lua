#!lua flags=allow-oom
--[[
  drain: delete every job not yet started: wait and prioritized, and delayed when asked
  (BullMQ's drain). Active and finished jobs stay, and so does a job scheduler's current
  iteration (or the schedule would stop). Each job's deduplication key is released. No event,
  as BullMQ.

  Each job goes as BullMQ's hard path does: its deduplication key released, and a parent in
  this queue left with no pending child deleted with it (common's delete_job).

  KEYS: wait prioritized delayed repeat stalled waiting-children
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  "1" to drain the delayed jobs too, else "0"
  Returns: the number of jobs deleted.
  allow-oom: deleting frees memory.
  Transitions: DRAIN, DELETE_PARENT, RELEASE_PARENT (a parent in another queue)
]]
--- @include "common"
--- @include "state"
--- @include "flows"

local drained = 0
local function drain(key, state, ids)
  local doomed = {}
  for _, id in ipairs(ids) do
    if not is_current_iteration(id) then
      doomed[#doomed + 1] = id
    end
  end
  if #doomed == #ids then
    redis.call('DEL', key)
  else
    for _, id in ipairs(doomed) do
      take_out(id, state)
    end
  end
  for _, id in ipairs(doomed) do
    delete_job(id, state, 'DRAIN', true)
  end
  drained = drained + #doomed
end

-- BullMQ's order: wait, then delayed (when asked), then prioritized.
drain(K.wait, 'waiting', redis.call('LRANGE', K.wait, 0, -1))
if ARGV[2] == '1' then
  drain(K.delayed, 'delayed', redis.call('ZRANGE', K.delayed, 0, -1))
end
drain(K.prioritized, 'prioritized', redis.call('ZRANGE', K.prioritized, 0, -1))
return drained
