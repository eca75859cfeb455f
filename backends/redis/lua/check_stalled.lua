#!lua
--[[
  check_stalled: one two-phase stalled check, throttled across all checkers of the queue by
  the stalled-check key.

  Phase 2 recovers the jobs marked by the previous check whose lock no longer exists, oldest
  activation first: stc + 1, then back to the front of wait (events "waiting", "stalled"), or
  failed with "job stalled more than allowable limit" when stc > max_stalled_count (events
  "stalled", "failed"; the job's own removeOnFail applies). Phase 1 then marks every active job.

  A job of a job scheduler that still exists (`rjk` names a scheduler hash or a member of
  `repeat`) is never failed for stalling, as in BullMQ 6.7: failing it could stop its schedule.

  KEYS: wait active failed stalled stalled-check marker events meta delayed prioritized pc id repeat
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  max_stalled_count
    3  throttle TTL for PX (ms)
    4  now (ms)
    5  the failure reason for jobs over the limit
  Returns: {ran (1/0), {recovered ids}, {failed ids}}
  A child failed here applies its parent option (the "flows" include), as a processor
    failure would.
  Transitions: RECOVER_STALLED, FAIL, TRIM, ADD, ADD_PRIORITIZED, ADD_DELAYED (a job parked
    by deduplication's keep_last_if_active is stored when its owner fails), RELEASE_PARENT,
    RELEASE_PARENT_PRIORITIZED, RELEASE_PARENT_DELAYED
]]
--- @include "common"
--- @include "dedup"
--- @include "flows"

if redis.call('EXISTS', K.stalled_check) == 1 then
  return {0, {}, {}}
end
local max_stalled, now, reason = tonumber(ARGV[2]), tonumber(ARGV[4]), ARGV[5]
redis.call('SET', K.stalled_check, num(now), 'PX', ARGV[3])

local marked = {}
for _, id in ipairs(redis.call('SMEMBERS', K.stalled)) do
  marked[id] = true
end
redis.call('DEL', K.stalled)

-- A marked job still in `active` has not left it since it was marked (every way out removes
-- the mark), so the active list gives the marked jobs in their order of activation.
local recovered, failed = {}, {}
local active = redis.call('LRANGE', K.active, 0, -1)
for i = #active, 1, -1 do
  local id = active[i]
  if marked[id] and redis.call('EXISTS', lock_key(id)) == 0 then
    redis.call('LREM', K.active, 1, id)
    local stalled_count = redis.call('HINCRBY', job_key(id), 'stc', 1)
    local scheduler_id = redis.call('HGET', job_key(id), 'rjk')
    local scheduled = scheduler_id and (redis.call('EXISTS', base .. 'repeat:' .. scheduler_id) == 1
      or redis.call('ZSCORE', K['repeat'], scheduler_id))
    if stalled_count > max_stalled and not scheduled and not PLANTED['no-stall-limit'] then
      -- BullMQ 6 reports every stall it finds, the one over the limit too.
      emit('stalled', 'jobId', id)
      local count, age_ms = keep_from(job_opts(id).removeOnFail)
      local deid = redis.call('HGET', job_key(id), 'deid')
      finish_failed(id, reason, count, age_ms, now)
      if deid then
        dedup_finished(deid, id, now)
      end
      failed[#failed + 1] = id
    else
      moved(id, 'RECOVER_STALLED', 'active')
      push_wait(id, true)
      emit('waiting', 'jobId', id, 'prev', 'active')
      emit('stalled', 'jobId', id)
      recovered[#recovered + 1] = id
    end
  end
end

active = redis.call('LRANGE', K.active, 0, -1)
if PLANTED['lose-stalled-mark'] then
  active = {}
end
for i = 1, #active, 7000 do
  redis.call('SADD', K.stalled, unpack(active, i, math.min(i + 6999, #active)))
end
return {1, recovered, failed}
