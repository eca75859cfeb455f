#!lua
--[[
  remove_child_dependency: detach a child from its parent (BullMQ's removeChildDependency);
  a last pending child releases the parent to the front of wait.

  KEYS: meta
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  child job id
  Returns: 0 done; 1 no pending relationship; -1 no such child; -5 no such parent.
  Transitions: RELEASE_PARENT
]]
--- @include "common"
--- @include "flows"

local key = job_key(ARGV[2])
if redis.call('EXISTS', key) == 0 then
  return -1
end
local queue_key, parent_id = parent_of(key)
if not queue_key then
  return 1
end
local parent_key = queue_key .. ':' .. parent_id
if redis.call('EXISTS', parent_key) == 0 then
  return -5
end
if redis.call('SREM', parent_key .. ':dependencies', key) == 0 then
  return 1
end
redis.call('HDEL', key, 'parentKey', 'parent')
if redis.call('SCARD', parent_key .. ':dependencies') == 0 then
  in_queue(queue_key .. ':', release_if_waiting, parent_id, 0, true)
end
return 0
