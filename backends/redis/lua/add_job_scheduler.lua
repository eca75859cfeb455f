#!lua
--[[
  add_job_scheduler: create or replace a job scheduler and store its current iteration.

  KEYS: repeat wait prioritized delayed id pc marker events meta active
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  scheduler id
    3  first slot (ms) of a pattern scheduler, or "" for an every scheduler (computed here)
    4  the scheduler hash's option fields (JSON object of strings)
    5  template data (JSON)
    6  template opts (JSON)
    7  the iteration's opts (JSON) without jobId, delay, timestamp
    8  now (ms, the caller's clock)
  Returns: {job id, delay}; -10 if a pattern slot's job id is taken; -11 if an every slot's
    id and the 32 after it are taken.
  Transitions: UNSCHEDULE, SCHEDULE, SCHEDULE_PRIORITIZED, SCHEDULE_DELAYED
]]
--- @include "common"
--- @include "scheduler"

local sid = ARGV[2]
local fields = cjson.decode(ARGV[4])
local opts = cjson.decode(ARGV[7])
local now = tonumber(ARGV[8])
local skey = scheduler_key(sid)
local prev = redis.call('ZSCORE', K['repeat'], sid)
if prev then
  prev = tonumber(prev)
end
local old = redis.call('HMGET', skey, 'every', 'offset', 'ic')
local every = tonumber(fields['every'])
local offset = tonumber(fields['offset'])
if not offset and type(opts['repeat']) == 'table' then
  offset = tonumber(opts['repeat']['offset'])
end
offset = offset or 0
local next_ms = tonumber(ARGV[3])
local new_offset = 0
local same_every = false
if every then
  same_every = prev ~= nil and old[1] == fields['every']
  local from = nil
  if same_every then
    from = prev
  end
  next_ms, new_offset = every_next(from, every, now, offset, tonumber(fields['startDate']))
end
local removed = false
if prev then
  removed = unschedule(iteration_id(sid, prev), false) ~= nil
end
if every then
  if removed and same_every then
    next_ms = prev
  end
  if not fields['offset'] then
    local kept = nil
    if removed and old[2] then
      kept = old[2]
    end
    fields['offset'] = kept or num(new_offset)
  end
  local free = false
  for _ = 1, 32 do
    if redis.call('EXISTS', job_key(iteration_id(sid, next_ms))) == 0 then
      free = true
      break
    end
    next_ms = next_ms + every
  end
  if not free then
    return -11
  end
else
  if not fields['offset'] then
    fields['offset'] = '0'
  end
  if redis.call('EXISTS', job_key(iteration_id(sid, next_ms))) == 1 then
    return -10
  end
end
redis.call('ZADD', K['repeat'], num(next_ms), sid)
redis.call('DEL', skey)
local flat = {}
for field, value in pairs(fields) do
  flat[#flat + 1] = field
  flat[#flat + 1] = value
end
if ARGV[5] ~= '{}' then
  flat[#flat + 1] = 'data'
  flat[#flat + 1] = ARGV[5]
end
if ARGV[6] ~= '{}' then
  flat[#flat + 1] = 'opts'
  flat[#flat + 1] = ARGV[6]
end
flat[#flat + 1] = 'ic'
flat[#flat + 1] = old[3] or '1'
redis.call('HSET', skey, unpack(flat))
local id, delay = store_iteration(sid, next_ms, fields['name'], ARGV[5], opts, now)
return {id, delay}
