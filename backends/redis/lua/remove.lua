#!lua flags=allow-oom
--[[
  remove: delete a job that holds no lock, from whatever state it is in.

  KEYS: wait active prioritized delayed completed failed stalled events repeat
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
  Returns: 0; -1 if the job is in no state; -20 if its lock is held; -8 if it is a job
    scheduler's current iteration (nothing changed).
  allow-oom: removing frees memory, so it runs even when Redis is out of memory (its one
  growth is the "removed" event); every other writing script is refused whole then.
  Transitions: REMOVE
]]
--- @include "common"
--- @include "state"

local id = ARGV[2]
local state = job_state(id)
if not state then
  return -1
end
if redis.call('EXISTS', lock_key(id)) == 1 and not PLANTED['remove-locked-job'] then
  return -20
end
if is_current_iteration(id) then
  return -8
end
take_out(id, state)
delete_job(id, state, 'REMOVE')
emit('removed', 'jobId', id, 'prev', state)
return 0
