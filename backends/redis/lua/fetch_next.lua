#!lua
--[[
  fetch_next: promote due delayed jobs, then take the next job (wait first, then prioritized)
  and lock it for the fetch's token.

  KEYS: wait active prioritized delayed pc marker events meta
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  token: the fetch's lock token
    3  lock TTL for PX (ms)
    4  "1" if a worker name follows, else "0"
    5  worker name (stored as `pb`)
    6  now (ms, the caller's clock)
  Returns: {0} while paused or when nothing is stored; {0, next_due_ms} when only delayed jobs
    remain; {1, id, fields} for the job now active, fields being its hash as the JSON array
    [field, value, ...] (HGETALL's order).
  Transitions: PROMOTE, PROMOTE_PRIORITIZED, FETCH
]]
--- @include "common"

return fetch(ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]))
