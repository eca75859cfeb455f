--[[
  Rate limits and global concurrency, as BullMQ 6.7's moveToActive applies them (inserted where
  a script says `--- @include "limits"`, after "common"; the decisions mirror
  corral.engine.limits). Needs K.limiter, K.meta, K.active, K.wait, K.prioritized.

  `limits_for(worker_max, worker_duration)` reads the queue's meta once and returns two values:
  whether the queue is paused (for `fetch`, which takes both), and nil when nothing limits
  fetching (no max anywhere, no global concurrency), else a table of closures:
    gate()      -> ms a rate limit holds fetches back (> 0), -1 when maxed, or 0; and the max
    count(id)   INCR the window for an activation (PEXPIRE on the first one; not for `defa`)
    maxed()     whether `active` has reached meta.concurrency
  `fetch` (common) calls them at the points where moveToActive checks and counts.
  Precedence (uneven, as BullMQ's): meta.max beats the worker's max; the worker's duration
  beats meta.duration.
]]

local function limits_for(worker_max, worker_duration)
  local meta = redis.call('HMGET', K.meta, 'max', 'duration', 'concurrency', 'paused')
  local paused = meta[4] ~= false
  local max_jobs = tonumber(meta[1]) or tonumber(worker_max)
  local concurrency = tonumber(meta[3])
  if not max_jobs and not concurrency then
    return paused, nil
  end
  local duration = tonumber(worker_duration) or math.abs(tonumber(meta[2]) or 0)
  local L = {}
  function L.maxed()
    if PLANTED['ignore-global-concurrency'] then
      return false
    end
    return concurrency ~= nil and redis.call('LLEN', K.active) >= concurrency
  end
  function L.gate()
    if max_jobs then
      local count = tonumber(redis.call('GET', K.limiter))
      if count and count >= max_jobs then
        local ttl = redis.call('PTTL', K.limiter)
        if ttl == 0 then
          -- (expiring this very millisecond: gone, as BullMQ deletes it, so that this
          -- activation opens a new window)
          redis.call('DEL', K.limiter)
        elseif ttl > 0 then
          return ttl, max_jobs
        end
      end
    end
    if L.maxed() then
      return -1, max_jobs
    end
    return 0, max_jobs
  end
  function L.count(id)
    if not max_jobs or PLANTED['no-shared-limiter'] then
      return
    end
    if redis.call('HEXISTS', base .. id, 'defa') == 1 then
      return
    end
    if redis.call('INCR', K.limiter) == 1 and math.floor(duration) > 0 then
      redis.call('PEXPIRE', K.limiter, math.floor(duration))
    end
  end
  return paused, L
end

-- Set the marker when jobs are ready and the queue may serve them (a limit was lifted).
local function wake()
  if (redis.call('LLEN', K.wait) > 0 or redis.call('ZCARD', K.prioritized) > 0)
      and may_signal() then
    signal('0', 0)
  end
end
