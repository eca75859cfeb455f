#!lua flags=allow-oom
--[[
  obliterate: delete up to `count` jobs of a paused queue, active ones first (only with
  force), then delayed, the job schedulers (`repeat` and their hashes), completed, wait,
  prioritized and failed (BullMQ's order); once a call finds budget left after all of them,
  delete the queue's structures, counters, marks, events and meta. Each job goes with its
  lock and logs, and releases its deduplication key. As BullMQ's, the rate-limit window
  (`limiter`) and deduplication keys no job deleted here owned (de:*, dn:*) stay. The one key left is
  corral's transition log, which exists only when tests load the scripts instrumented: it
  belongs to its reader, who empties it (a move it has not read yet must not be lost).

  Each job goes as BullMQ's hard path does (common's delete_job): its deduplication key
  released, and a parent in this queue left with no pending child deleted with it. Unlike
  BullMQ's, the parents waiting for children go too, last (BullMQ leaves those whose children
  are in other queues behind).

  KEYS: wait active prioritized delayed completed failed stalled stalled-check id pc marker events meta repeat waiting-children
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  count
    3  "1" for force, else "0"
  Returns: 0 when nothing of the queue is left, 1 when the count was used up (call again),
    -1 when the queue is not paused, -2 when it has active jobs and force is not set.
  allow-oom: deleting frees memory.
  Transitions: OBLITERATE, DELETE_PARENT, RELEASE_PARENT (a parent in another queue)
]]
--- @include "common"
--- @include "flows"

if not is_paused() then
  return -1
end
local budget = tonumber(ARGV[2])
local active = redis.call('LRANGE', K.active, 0, budget - 1)
if #active > 0 and ARGV[3] ~= '1' then
  return -2
end

local function delete(ids, state)
  for _, id in ipairs(ids) do
    if redis.call('EXISTS', job_key(id)) == 1 then -- (not deleted with a child already)
      delete_job(id, state, 'OBLITERATE', true)
    end
  end
  budget = budget - #ids
end

-- The job schedulers' step: their `repeat` entries and hashes (their iterations are jobs).
local function delete_schedulers()
  local ids = redis.call('ZRANGE', K['repeat'], 0, budget - 1)
  for _, scheduler_id in ipairs(ids) do
    redis.call('DEL', base .. 'repeat:' .. scheduler_id)
  end
  if #ids > 0 then
    redis.call('ZREM', K['repeat'], unpack(ids))
  end
  budget = budget - #ids
end

for _, id in ipairs(active) do
  redis.call('LREM', K.active, 1, id)
end
delete(active, 'active')
if budget <= 0 then
  return 1
end
for _, state in ipairs({'delayed', 'repeat', 'completed', 'waiting', 'prioritized', 'failed',
    'waiting-children'}) do
  local ids = {}
  if state == 'repeat' then
    delete_schedulers()
  elseif state == 'waiting' then
    -- BullMQ's LRANGE 0 count-1: the newest first (the left end of the list)
    ids = redis.call('LRANGE', K.wait, 0, budget - 1)
    if #ids > 0 then
      redis.call('LTRIM', K.wait, #ids, -1)
    end
  else
    local source = K[state] or K.waiting_children
    ids = redis.call('ZRANGE', source, 0, budget - 1)
    if #ids > 0 then
      redis.call('ZREM', source, unpack(ids))
    end
  end
  delete(ids, state)
  if budget <= 0 then
    return 1
  end
end
redis.call('DEL', K.wait, K.active, K.prioritized, K.delayed, K.completed, K.failed, K.stalled,
  K.stalled_check, K.id, K.pc, K.marker, K.events, K.meta, K.waiting_children)
return 0
