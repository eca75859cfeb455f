#!lua
--[[
  add_jobs: store new jobs, in order, all in one atomic step.

  KEYS: wait prioritized delayed id pc marker events meta
  ARGV:
    1     base: "<prefix>:<queue>:"
    then 8 per job:
    +1    name
    +2    data (JSON)
    +3    opts (JSON)
    +4    timestamp (ms)
    +5    delay (ms; > 0 means delayed until timestamp + delay)
    +6    priority (0 .. 2^21 - 1)
    +7    lifo: "1" to put the job at the front of wait
    +8    custom job id, or "" for the next value of the id counter
  Returns: {id, created (1/0), id, created, ...}, one pair per job. An existing id is left
    untouched (created 0, event "duplicated").
  Transitions: ADD, ADD_PRIORITIZED, ADD_DELAYED
]]
--- @include "common"

local result = {}
for i = 2, #ARGV, 8 do
  local name, data, opts = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local timestamp, delay, priority = ARGV[i + 3], tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  -- BullMQ INCRs the counter on every add, custom id or not.
  local counter = redis.call('INCR', K.id)
  local id = ARGV[i + 7]
  if id == '' then
    id = tostring(counter)
  end
  local key = job_key(id)
  if redis.call('EXISTS', key) == 1 then
    emit('duplicated', 'jobId', id)
    result[#result + 1] = id
    result[#result + 1] = 0
  else
    redis.call('HSET', key, 'name', name, 'data', data, 'opts', opts, 'timestamp', timestamp,
      'delay', ARGV[i + 4], 'priority', ARGV[i + 5])
    emit('added', 'jobId', id, 'name', name)
    if delay > 0 then
      local due = tonumber(timestamp) + delay
      moved(id, 'ADD_DELAYED', nil)
      push_delayed(id, due)
      emit('delayed', 'jobId', id, 'delay', num(due))
    else
      if priority > 0 then
        moved(id, 'ADD_PRIORITIZED', nil)
        push_prioritized(id, priority)
      else
        moved(id, 'ADD', nil)
        push_wait(id, ARGV[i + 6] == '1')
      end
      emit('waiting', 'jobId', id)
    end
    result[#result + 1] = id
    result[#result + 1] = 1
  end
end
return result
