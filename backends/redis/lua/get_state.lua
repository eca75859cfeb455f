#!lua flags=no-writes
--[[
  get_state: where a job is, checked atomically across every structure.

  KEYS: wait active prioritized delayed completed failed waiting-children
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
  Returns: "waiting", "prioritized", "delayed", "active", "completed", "failed" or
    "waiting-children"; false
    (nil) when the job is in none of them.
  Transitions: none (read only)
]]
--- @include "state"

return job_state(ARGV[2])
