#!lua
--[[
  release: a closing worker gives an active job back. Its lock is dropped and it goes to the
  front of wait, without counting a stall or an attempt.

  KEYS: wait active stalled marker events meta
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
    3  token
  Returns: 0, or the owner-check code (-1, -2, -3, -6) with nothing changed.
  Transitions: RELEASE
]]
--- @include "common"

local id = ARGV[2]
local code = check_owner(id, ARGV[3])
if code == 0 then
  drop_lock(id)
  moved(id, 'RELEASE', 'active')
  push_wait(id, true)
  emit('waiting', 'jobId', id, 'prev', 'active')
end
return code
