#!lua
--[[
  add_jobs: store new jobs, in order, all in one atomic step.

  KEYS: wait prioritized delayed id pc marker events meta active
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
    untouched (created 0, event "duplicated"). A job deduplicated (its opts' `de`) is not
    stored: its pair is the id of the job holding the dedup id, created 0 (includes/dedup.lua).
  Transitions: ADD, ADD_PRIORITIZED, ADD_DELAYED, DEBOUNCE, RESCHEDULE
]]
--- @include "common"
--- @include "dedup"

-- One INCRBY for the batch: the counter ends where one INCR per job would leave it.
local jobs = (#ARGV - 1) / 8
local counter = redis.call('INCRBY', K.id, jobs) - jobs
-- (a function library keeps these between calls: a call cut short by an error must not leave
-- the next one a stale "made ready")
batch_ready, made_ready = true, false
local result = {}
for i = 2, #ARGV, 8 do
  local name, data, opts = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  counter = counter + 1
  local id, exists = new_job_id(ARGV[i + 7], counter)
  local created = 0
  if not exists then
    id, created = add_new_job(id, name, data, opts, ARGV[i + 3], tonumber(ARGV[i + 4]),
      tonumber(ARGV[i + 5]), ARGV[i + 6] == '1', ARGV[i + 7])
  end
  result[#result + 1] = id
  result[#result + 1] = created
end
flush_ready()
return result
