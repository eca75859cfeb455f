#!lua flags=no-writes
--[[
  get_job_logs: a range of a job's log rows and how many it has, read at one instant.

  KEYS: (none)
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
    3  start, 4  end (LRANGE indexes, already mirrored by the caller for newest-first reads)
  Returns: {rows, count}.
  Transitions: none
]]
--- @include "common"

local key = logs_key(ARGV[2])
return {redis.call('LRANGE', key, ARGV[3], ARGV[4]), redis.call('LLEN', key)}
