#!lua
--[[
  add_flow: store a flow (parents before their children) across queues, all or nothing.

  A node with children goes to its queue's waiting-children (score = its timestamp, event
  "waiting-children"); the others are added as add_jobs adds them. A child gets `parentKey` and
  `parent` and joins its parent's dependencies (a job that exists already is linked instead:
  its return value recorded if it completed). The refusals are checked before anything is
  written: -5 a parent outside the flow does not exist, -7 a job of another (live) parent.
  Parents left with no pending child are released at the end. Every queue's keys are built
  from the node's base (on Redis Cluster they share one hash slot: the backend checks it).

  KEYS: meta
  ARGV:
    1     base: "<prefix>:<queue>:" of the first node
    2     now (ms)
    then 12 per node:
    +0    the node's queue base "<prefix>:<queue>:"
    +1    name
    +2    data (JSON)
    +3    opts (JSON)
    +4    timestamp (ms)
    +5    delay (ms)
    +6    priority
    +7    lifo: "1" for the front of wait
    +8    job id, or "" for the next value of the id counter
    +9    parent key "<prefix>:<queue>:<id>", or "" for none
    +10   the child's parent field (JSON), when a parent key is given
    +11   "1" for a node with children
  Returns: {0, id, created (1/0), ...} or {-5 | -7, parent key}.
  A node is added by add_jobs' own step (common's new_job_id, dedup's add_new_job), which
  deduplicates a lone root that asks for it (the engine refuses deduplication on any other
  node, as BullMQ).
  Transitions: ADD, ADD_PRIORITIZED, ADD_DELAYED, ADD_WAITING_CHILDREN, RELEASE_PARENT,
    RELEASE_PARENT_PRIORITIZED, RELEASE_PARENT_DELAYED, DEBOUNCE, RESCHEDULE
]]
--- @include "common"
--- @include "dedup"
--- @include "flows"

local now = tonumber(ARGV[2])
local FIRST, STRIDE = 3, 12

local in_flow = {}
for i = FIRST, #ARGV, STRIDE do
  if ARGV[i + 8] ~= '' then
    in_flow[ARGV[i] .. ARGV[i + 8]] = true
  end
end
for i = FIRST, #ARGV, STRIDE do
  local parent_key = ARGV[i + 9]
  if parent_key ~= '' then
    if not in_flow[parent_key] and redis.call('EXISTS', parent_key) == 0 then
      return {-5, parent_key}
    end
    if ARGV[i + 8] ~= '' then
      local old = redis.call('HGET', ARGV[i] .. ARGV[i + 8], 'parentKey')
      if old and old ~= parent_key and redis.call('EXISTS', old) == 1 then
        return {-7, parent_key}
      end
    end
  end
end

local function add_node(i)
  local id, exists = new_job_id(ARGV[i + 8])
  if exists then
    return id, 0
  end
  local name, data, opts, timestamp = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if ARGV[i + 11] ~= '1' then
    return add_new_job(id, name, data, opts, timestamp, tonumber(ARGV[i + 5]),
      tonumber(ARGV[i + 6]), ARGV[i + 7] == '1', ARGV[i + 8])
  end
  redis.call('HSET', job_key(id), 'name', name, 'data', data, 'opts', opts,
    'timestamp', timestamp, 'delay', ARGV[i + 5], 'priority', ARGV[i + 6])
  emit('added', 'jobId', id, 'name', name)
  moved(id, 'ADD_WAITING_CHILDREN', nil)
  redis.call('ZADD', K.waiting_children, timestamp, id)
  emit('waiting-children', 'jobId', id)
  return id, 1
end

local result = {0}
for i = FIRST, #ARGV, STRIDE do
  local id, created = in_queue(ARGV[i], add_node, i)
  local parent_key = ARGV[i + 9]
  if parent_key ~= '' then
    local key = ARGV[i] .. id
    redis.call('HSET', key, 'parentKey', parent_key, 'parent', ARGV[i + 10])
    if redis.call('ZSCORE', ARGV[i] .. 'completed', id) then
      redis.call('HSET', parent_key .. ':processed', key,
        redis.call('HGET', key, 'returnvalue') or 'null')
    else
      redis.call('SADD', parent_key .. ':dependencies', key)
    end
  end
  result[#result + 1] = id
  result[#result + 1] = created
end
-- Parents whose children all exist and completed already.
for i = FIRST, #ARGV, STRIDE do
  if ARGV[i + 11] == '1' and redis.call('SCARD', ARGV[i] .. ARGV[i + 8] .. ':dependencies') == 0 then
    in_queue(ARGV[i], release_if_waiting, ARGV[i + 8], now, false)
  end
end
return result
