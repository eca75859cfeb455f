#!lua flags=allow-oom
--[[
  clean: delete up to `limit` jobs of one state dated at or before `timestamp` (BullMQ's
  cleanJobsInSet). Finished jobs are dated by their score; the others by the first of
  finishedOn, processedOn, timestamp present (delayed: processedOn, timestamp; prioritized:
  timestamp), a job with none of them counting as old. From wait and active only the oldest
  `limit` entries are looked at, and an active job is skipped while its lock is held. A job
  scheduler's current iteration is never deleted (or the schedule would stop). Each job's
  deduplication key is released.

  Each job goes as BullMQ's hard path does: its deduplication key released, and a parent in
  this queue left with no pending child deleted with it (common's delete_job).

  KEYS: wait active prioritized delayed completed failed stalled events repeat waiting-children
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  timestamp
    3  limit (0: no limit)
    4  state: "waiting", "active", "prioritized", "delayed", "completed" or "failed"
  Returns: the deleted ids. One "cleaned" event with their count.
  allow-oom: deleting frees memory (its one growth is the event).
  Transitions: CLEAN, DELETE_PARENT, RELEASE_PARENT (a parent in another queue)
]]
--- @include "common"
--- @include "state"
--- @include "flows"

local timestamp = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local state = ARGV[4]
local dates = {
  waiting = {'finishedOn', 'processedOn', 'timestamp'},
  active = {'finishedOn', 'processedOn', 'timestamp'},
  delayed = {'processedOn', 'timestamp'},
  prioritized = {'timestamp'},
}

local function is_old(id)
  for _, field in ipairs(dates[state]) do
    local value = redis.call('HGET', job_key(id), field)
    if value and value ~= '' then
      local date = tonumber(value)
      return date == nil or date <= timestamp
    end
  end
  return true
end

local deleted = {}
if state == 'completed' or state == 'failed' then
  if limit > 0 then
    deleted = redis.call('ZRANGEBYSCORE', K[state], 0, ARGV[2], 'LIMIT', 0, limit)
  else
    deleted = redis.call('ZRANGEBYSCORE', K[state], 0, ARGV[2])
  end
else
  local candidates
  if state == 'waiting' or state == 'active' then
    local key = K.wait
    if state == 'active' then
      key = K.active
    end
    if limit > 0 then
      candidates = redis.call('LRANGE', key, -limit, -1)
    else
      candidates = redis.call('LRANGE', key, 0, -1)
    end
  else
    candidates = redis.call('ZRANGE', K[state], 0, -1)
  end
  for _, id in ipairs(candidates) do
    if limit > 0 and #deleted >= limit then
      break
    end
    if (state ~= 'active' or redis.call('EXISTS', lock_key(id)) == 0)
        and not is_current_iteration(id) and is_old(id) then
      deleted[#deleted + 1] = id
    end
  end
end

for _, id in ipairs(deleted) do
  take_out(id, state)
  delete_job(id, state, 'CLEAN', true)
end
redis.call('XADD', K.events, '*', 'event', 'cleaned', 'count', #deleted)
return deleted
