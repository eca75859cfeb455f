#!lua
--[[
  fetch_next: promote due delayed jobs, then take the next job (wait first, then prioritized)
  and lock it for the fetch's token.

  KEYS: wait active prioritized delayed pc marker events meta limiter
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  token: the fetch's lock token
    3  lock TTL for PX (ms)
    4  "1" if a worker name follows, else "0"
    5  worker name (stored as `pb`)
    6  now (ms, the caller's clock)
    7  the worker's limiter max, "" for none
    8  the worker's limiter duration (ms), "" for none
  Returns: {0} while paused or maxed (global concurrency) or when nothing is stored; {2, ms}
    while a rate limit holds fetches back; {0, next_due_ms} when only delayed jobs
    remain; {1, id, fields} for the job now active, fields being its hash as the JSON array
    [field, value, ...] (HGETALL's order).
  Transitions: PROMOTE, PROMOTE_PRIORITIZED, FETCH
]]
--- @include "common"
--- @include "limits"

return fetch(ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), limits_for(ARGV[7], ARGV[8]))
