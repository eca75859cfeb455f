--[[
  Job scheduler helpers (inserted by `--- @include "scheduler"`, after "common"). They mirror
  corral.engine.job_schedulers (every_next_millis, iteration_id) and the memory backend's
  SchedulerOps, and need K.wait, K.active, K.prioritized, K.delayed, K.id, K.pc, K.marker,
  K.events and K.meta. A scheduler's hash is base .. 'repeat:' .. id; its iterations are ordinary jobs.
]]

local function scheduler_key(scheduler_id)
  return base .. 'repeat:' .. scheduler_id
end

local function iteration_id(scheduler_id, millis)
  return 'repeat:' .. scheduler_id .. ':' .. num(millis)
end

-- The next slot of an `every` scheduler and the schedule's offset (anchored to the instant it
-- was made; missed slots are skipped).
local function every_next(prev, every, now, offset, start_date)
  local next_ms
  if not prev then
    if start_date then
      next_ms = math.max(start_date, now)
    elseif offset and offset > 0 then
      next_ms = math.floor(now / every) * every + offset
      if next_ms <= now then
        next_ms = next_ms + every
      end
    else
      next_ms = now
    end
  else
    next_ms = prev + every
    if next_ms < now then
      next_ms = math.floor(now / every) * every + (offset or 0)
      if next_ms <= now then
        next_ms = next_ms + every
      end
    end
  end
  local new_offset = offset
  if not offset or offset == 0 then
    new_offset = next_ms - math.floor(next_ms / every) * every
  end
  return math.floor(next_ms), math.floor(new_offset)
end

local SCHEDULE_MOVES = {wait = 'SCHEDULE', prioritized = 'SCHEDULE_PRIORITIZED',
  delayed = 'SCHEDULE_DELAYED'}

-- Transitions SCHEDULE / SCHEDULE_PRIORITIZED / SCHEDULE_DELAYED: store the iteration of slot
-- `millis` (its id is free) with `opts` (a table); returns its id and delay.
local function store_iteration(scheduler_id, millis, name, data, opts, now)
  local id = iteration_id(scheduler_id, millis)
  local delay = math.max(0, millis - now)
  opts['jobId'] = id
  opts['delay'] = delay
  opts['timestamp'] = now
  local priority = tonumber(opts['priority'] or 0) or 0
  redis.call('INCR', K.id)  -- BullMQ counts every add, custom id or not
  store_new_job(id, name, data, cjson.encode(opts), num(now), delay, priority,
    opts['lifo'] == true, nil, SCHEDULE_MOVES, scheduler_id)
  return id, delay
end

-- Transition UNSCHEDULE: drop a pending iteration if it is delayed (or, unless
-- `delayed_only`, prioritized or waiting). Returns the state it was in, or nil.
local function unschedule(id, delayed_only)
  local state = nil
  if redis.call('ZREM', K.delayed, id) == 1 then
    state = 'delayed'
  elseif not delayed_only then
    if redis.call('ZREM', K.prioritized, id) == 1 then
      state = 'prioritized'
    elseif redis.call('LREM', K.wait, 1, id) == 1 then
      state = 'waiting'
    end
  end
  if state then
    delete_job(id, state, 'UNSCHEDULE')
  end
  return state
end
