--[[
  Flows, the parent side (inserted after "common" where a script says `--- @include "flows"`):
  what a child's completion, final failure or deletion does to its parent, inside the script
  that finishes (or deletes) the child; corral.backends.memory.parents does the same, and
  corral.engine.flows is the policy both follow.

  A parent may live in another queue: `in_queue(queue_base, fn, ...)` runs fn with `K` and
  `base` pointing at that queue's keys (every key of a flow must then be in one hash slot on
  Redis Cluster; the backend refuses flows that are not). A child names its parent in its
  `parent` field ({"id", "queueKey", flag}), or failing that its `parentKey`.
  Sets FLOW.child_failed and FLOW.forget, which common's finish_failed and trim call (in the
  function library, the functions of the scripts that include "flows" set them as they start;
  the others clear them, scripts.py).
]]

local QUEUE_SUFFIXES = {
  wait = 'wait', active = 'active', prioritized = 'prioritized', delayed = 'delayed',
  completed = 'completed', failed = 'failed', stalled = 'stalled',
  stalled_check = 'stalled-check', id = 'id', pc = 'pc', marker = 'marker', events = 'events',
  meta = 'meta', waiting_children = 'waiting-children',
}
local FAILURE_FLAGS = {'fpof', 'cpof', 'idof', 'rdof'}

-- (fn returns at most two values)
local function in_queue(queue_base, fn, ...)
  local saved_base, saved = base, {}
  for field, suffix in pairs(QUEUE_SUFFIXES) do
    saved[field] = K[field]
    K[field] = queue_base .. suffix
  end
  base = queue_base
  local first, second = fn(...)
  base = saved_base
  for field in pairs(QUEUE_SUFFIXES) do
    K[field] = saved[field]
  end
  return first, second
end

-- The parent of a child job (its key given): queue key, parent id, failure flag ('' for none).
-- `fields`: its `parent` and `parentKey` fields when the caller read them already.
local function parent_of(key, fields)
  fields = fields or redis.call('HMGET', key, 'parent', 'parentKey')
  if fields[1] then
    local ok, link = pcall(cjson.decode, fields[1])
    if ok and type(link) == 'table' and type(link.queueKey) == 'string' then
      local flag = ''
      for _, name in ipairs(FAILURE_FLAGS) do
        if link[name] == true then
          flag = name
          break
        end
      end
      return link.queueKey, tostring(link.id), flag
    end
  end
  if fields[2] then
    local queue_key, id = string.match(fields[2], '^(.*):([^:]*)$')
    if queue_key then
      return queue_key, id, ''
    end
  end
  return nil
end

-- Out of waiting-children (or delayed, for a failed child): transition RELEASE_PARENT*,
-- run in the parent's queue. `to_wait`: to the front of wait whatever its options; `silent`:
-- no event (BullMQ's hard removal path).
local function release_parent(id, now, to_wait, silent)
  local key = job_key(id)
  local source = 'waiting-children'
  if redis.call('ZREM', K.waiting_children, id) == 0 then
    redis.call('ZREM', K.delayed, id)
    source = 'delayed'
  end
  local delay = 0
  if not to_wait and source == 'waiting-children' then
    delay = tonumber(redis.call('HGET', key, 'delay') or '0') or 0
  end
  if delay > 0 then
    moved(id, 'RELEASE_PARENT_DELAYED', source)
    local due = now + delay
    push_delayed(id, due)
    emit('delayed', 'jobId', id, 'delay', num(due))
    return
  end
  if to_wait then
    moved(id, 'RELEASE_PARENT', source)
    push_wait(id, true)
  else
    make_ready(id, source, 'RELEASE_PARENT', 'RELEASE_PARENT_PRIORITIZED', true)
  end
  if not silent then
    emit('waiting', 'jobId', id, 'prev', source)
  end
end

local function release_if_waiting(id, now, to_wait, silent)
  if redis.call('ZSCORE', K.waiting_children, id) then
    release_parent(id, now, to_wait, silent)
  end
end

-- The child's parent (queue key, parent id, parent key, flag) after taking the child out of
-- the parent's pending dependencies; nil if it was not pending there.
local function take_pending(key, fields)
  local queue_key, parent_id, flag = parent_of(key, fields)
  if not queue_key then
    return nil
  end
  local parent_key = queue_key .. ':' .. parent_id
  if redis.call('EXISTS', parent_key) == 0
      or redis.call('SREM', parent_key .. ':dependencies', key) == 0 then
    return nil
  end
  return queue_key, parent_id, parent_key, flag
end

-- A child completed: its value into the parent's processed; a last child releases the parent.
-- `fields` as parent_of's.
local function child_completed(id, value, now, fields)
  local key = job_key(id)
  local queue_key, parent_id, parent_key = take_pending(key, fields)
  if not queue_key then
    return
  end
  local record_late = PLANTED['flow-release-before-record']
  if not record_late then
    redis.call('HSET', parent_key .. ':processed', key, value)
  end
  local pending = redis.call('SCARD', parent_key .. ':dependencies')
  if PLANTED['flow-stale-pending-count'] then
    pending = pending + 1 -- (planted: the count as it was before this child was taken out)
  end
  if pending == 0 then
    in_queue(queue_key .. ':', release_if_waiting, parent_id, now, false)
  end
  if record_late then -- (planted: the parent moved before the child's result is recorded)
    redis.call('HSET', parent_key .. ':processed', key, value)
  end
end

local function apply_child_failure(parent_id, parent_key, key, flag, reason, now)
  if flag == 'fpof' then
    redis.call('ZADD', parent_key .. ':unsuccessful', num(now), key)
    if redis.call('ZSCORE', K.failed, parent_id) then
      return
    end
    redis.call('HSET', parent_key, 'defa', 'child ' .. key .. ' failed')
    if redis.call('ZSCORE', K.waiting_children, parent_id) then
      release_parent(parent_id, now, false)
    elseif redis.call('ZSCORE', K.delayed, parent_id) then
      redis.call('HSET', parent_key, 'delay', '0')
      release_parent(parent_id, now, false)
    end
    return
  end
  if flag ~= 'rdof' then
    redis.call('HSET', parent_key .. ':failed', key, reason)
  end
  if flag == 'cpof' or redis.call('SCARD', parent_key .. ':dependencies') == 0 then
    release_if_waiting(parent_id, now, false)
  end
end

-- A child failed for good: the flag in its parent field says what its parent does.
FLOW.child_failed = function(id, reason, now)
  local key = job_key(id)
  local _, _, flag = parent_of(key)
  if not flag or flag == '' then
    return
  end
  if flag == 'fpof' and PLANTED['flow-fpof-continues'] then
    flag = 'cpof' -- (planted: the parent is released, not failed)
  end
  local queue_key, parent_id, parent_key = take_pending(key)
  if queue_key then
    in_queue(queue_key .. ':', apply_child_failure, parent_id, parent_key, key, flag, reason, now)
  end
end

-- The parent-side keys of a job (its children by outcome).
local function drop_children_keys(key)
  redis.call('DEL', key .. ':dependencies', key .. ':processed', key .. ':failed',
    key .. ':unsuccessful')
end

-- A job is being deleted: drop its children's records and detach it from its parent. A last
-- pending child releases a parent waiting for it to the front of wait. `hard` (clean, drain,
-- obliterate: BullMQ's hard path) releases a parent in another queue silently, and takes one
-- in this queue out of waiting-children instead, returning its id for the caller to delete.
FLOW.forget = function(id, hard)
  local key = job_key(id)
  drop_children_keys(key)
  local queue_key, parent_id, parent_key = take_pending(key)
  if not queue_key or redis.call('SCARD', parent_key .. ':dependencies') > 0 then
    return nil
  end
  if hard and queue_key .. ':' == base then
    if redis.call('ZREM', K.waiting_children, parent_id) == 1 then
      return parent_id
    end
    return nil
  end
  in_queue(queue_key .. ':', release_if_waiting, parent_id, 0, true, hard)
  return nil
end

-- A finished child is retried (BullMQ's moveChildBackToParentDependencies): its result
-- (completed) or its recorded failure (failed) leaves its parent's keys and it is pending there
-- again. The parent is not moved: one that left waiting-children stays where it is.
local function child_retried(id, state)
  local key = job_key(id)
  local parent_key = redis.call('HGET', key, 'parentKey')
  if not parent_key or redis.call('EXISTS', parent_key) == 0 then
    return
  end
  local dropped
  if state == 'failed' then
    dropped = redis.call('ZREM', parent_key .. ':unsuccessful', key) == 1
      or redis.call('HDEL', parent_key .. ':failed', key) == 1
  else
    dropped = redis.call('HDEL', parent_key .. ':processed', key) == 1
  end
  if dropped then
    redis.call('SADD', parent_key .. ':dependencies', key)
  end
end
