#!lua flags=allow-oom
--[[
  obliterate: delete up to `count` jobs of a paused queue, active ones first (only with
  force), then delayed, completed, wait, prioritized and failed (BullMQ's order); once a call
  finds budget left after all of them, delete every key of the queue: its structures,
  counters, marks, events, meta and job schedulers. Each job goes with its lock and logs. The one key left is
  corral's transition log, which exists only when tests load the scripts instrumented: it
  belongs to its reader, who empties it (a move it has not read yet must not be lost).

  KEYS: wait active prioritized delayed completed failed stalled stalled-check id pc marker events meta repeat
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  count
    3  "1" for force, else "0"
  Returns: 0 when nothing of the queue is left, 1 when the count was used up (call again),
    -1 when the queue is not paused, -2 when it has active jobs and force is not set.
  allow-oom: deleting frees memory.
  Transitions: OBLITERATE
]]
--- @include "common"

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
    moved(id, 'OBLITERATE', state)
    redis.call('DEL', job_key(id), lock_key(id), job_key(id) .. ':logs')
    redis.call('SREM', K.stalled, id)
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
for _, state in ipairs({'delayed', 'completed', 'waiting', 'prioritized', 'failed'}) do
  local ids
  if state == 'waiting' then
    -- BullMQ's LRANGE 0 count-1: the newest first (the left end of the list)
    ids = redis.call('LRANGE', K.wait, 0, budget - 1)
    if #ids > 0 then
      redis.call('LTRIM', K.wait, #ids, -1)
    end
  else
    ids = redis.call('ZRANGE', K[state], 0, budget - 1)
    if #ids > 0 then
      redis.call('ZREM', K[state], unpack(ids))
    end
  end
  delete(ids, state)
  if budget <= 0 then
    return 1
  end
end
-- Every job scheduler goes too (its hash, then the `repeat` set); the dedup keys and the
-- rate-limit window are not the queue's listed keys and stay, as in BullMQ.
for _, sid in ipairs(redis.call('ZRANGE', K['repeat'], 0, -1)) do
  redis.call('DEL', base .. 'repeat:' .. sid)
end
redis.call('DEL', K.wait, K.active, K.prioritized, K.delayed, K.completed, K.failed, K.stalled,
  K.stalled_check, K.id, K.pc, K.marker, K.events, K.meta, K['repeat'])
return 0
