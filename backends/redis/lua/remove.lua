#!lua flags=allow-oom
--[[
  remove: delete a job that holds no lock, from whatever state it is in, with its children.

  A parent goes with every descendant it has, in any queue (BullMQ's removeChildren): children
  found in its processed, dependencies, failed and unsuccessful keys, each removed before its
  parent (siblings in key order), each with a "removed" event in its own queue and its
  deduplication key released.
  Refused whole if any of them holds a lock. The job itself is detached from its own parent (a
  last pending child releases it).

  KEYS: wait active prioritized delayed completed failed stalled events repeat waiting-children
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
  Returns: 0; -1 if the job is in no state; -20 if a lock is held; -8 if the job is a job
    scheduler's current iteration (nothing changed).
  allow-oom: removing frees memory, so it runs even when Redis is out of memory (its one
  growth is the "removed" event); every other writing script is refused whole then.
  Transitions: REMOVE, RELEASE_PARENT
]]
--- @include "common"
--- @include "state"
--- @include "flows"

local id = ARGV[2]
if not job_state(id) then
  return -1
end

-- The job and its descendants as {queue base, id}, children first.
local order, seen = {}, {}
local function visit(queue_base, job_id)
  local key = queue_base .. job_id
  seen[key] = true
  local children = redis.call('HKEYS', key .. ':processed')
  for _, listed in ipairs({redis.call('SMEMBERS', key .. ':dependencies'),
      redis.call('HKEYS', key .. ':failed'), redis.call('ZRANGE', key .. ':unsuccessful', 0, -1)}) do
    for _, child in ipairs(listed) do
      children[#children + 1] = child
    end
  end
  table.sort(children) -- (the dependencies are a set, in no order: memory sorts too)
  for _, child in ipairs(children) do
    local child_base, child_id = string.match(child, '^(.*:)([^:]*)$')
    if child_base and not seen[child] and redis.call('EXISTS', child) == 1 then
      visit(child_base, child_id)
    end
  end
  order[#order + 1] = {queue_base, job_id}
end
visit(base, id)

for _, entry in ipairs(order) do
  -- (the planted bug "remove-locked-job", see PLANTED, skips the lock check)
  if redis.call('EXISTS', entry[1] .. entry[2] .. ':lock') == 1
      and not PLANTED['remove-locked-job'] then
    return -20
  end
end
if is_current_iteration(id) then
  return -8
end
-- (no child removed below may release a parent that goes too)
for _, entry in ipairs(order) do
  drop_children_keys(entry[1] .. entry[2])
end

local function remove_one(job_id)
  local state = job_state(job_id)
  if not state then
    return
  end
  take_out(job_id, state)
  delete_job(job_id, state, 'REMOVE')
  emit('removed', 'jobId', job_id, 'prev', state)
end

for _, entry in ipairs(order) do
  in_queue(entry[1], remove_one, entry[2])
end
return 0
