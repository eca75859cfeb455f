--[[
  Helpers shared by the operation scripts (inserted where a script says `--- @include "common"`).

  They expect the `K` table of queue keys that scripts.py generates from each script's KEYS
  header line (`K.wait`, `K.stalled_check`, ...) and the `base` string "<prefix>:<queue>:".
  A helper that touches a key the including script does not list fails loudly (nil key).

  Every state change calls `moved(id, TRANSITION, source_state)` (a no-op unless the scripts
  are loaded with a transition log, see scripts.py), in the order and at the point where the
  memory backend records the same change. `PLANTED` holds deliberate bugs for the simulator's
  self-test; it is empty unless asked for.

  Numbers: Lua 5.1 numbers are doubles and `tostring` keeps only 14 digits, so every score or
  timestamp handed to redis.call goes through `num` (exact up to 2^53).
]]

local PROMOTE_LIMIT = 1000      -- due delayed jobs promoted per operation (BullMQ: 1,000)
local TRIM_LIMIT = 1000         -- finished jobs deleted per retention pass
local MAX_EVENTS = 10000        -- events stream length (BullMQ's default maxLenEvents)
-- Flow hooks, set by the "flows" include in the scripts that finish or delete children.
local FLOW = {}

local function num(x)
  return string.format('%.0f', x)
end

local function job_key(id)
  return base .. id
end

local function lock_key(id)
  return base .. id .. ':lock'
end

-- The job's log rows (BullMQ's `<job>:logs` list), deleted with the job.
local function logs_key(id)
  return base .. id .. ':logs'
end

local function is_paused()
  return redis.call('HEXISTS', K.meta, 'paused') == 1
end

-- Whether a job made ready sets the marker: not while the queue is paused or maxed (BullMQ's
-- isQueuePausedOrMaxed: no worker could take the job anyway). Maxed: LLEN active >=
-- meta.concurrency (a script that can make a job ready lists `active` and `meta`).
local function may_signal()
  local meta = redis.call('HMGET', K.meta, 'paused', 'concurrency')
  if meta[1] then
    return false
  end
  local concurrency = tonumber(meta[2])
  return concurrency == nil or redis.call('LLEN', K.active) < concurrency
end

-- XADD one BullMQ event: field "event" = name, then the given field/value pairs.
local function emit(name, ...)
  redis.call('XADD', K.events, 'MAXLEN', '~', MAX_EVENTS, '*', 'event', name, ...)
end

-- Set marker member "0" (jobs ready, score 0) or "1" (score = next due ms), keeping the lower
-- score if the member is already there.
local function signal(member, score)
  redis.call('ZADD', K.marker, 'LT', num(score), member)
end

-- A script that makes many jobs of one queue ready (add_jobs) sets `batch_ready`: the pushes
-- below then only note that a job became ready, and the script calls `flush_ready` once at the
-- end, as nothing it does between its pushes changes `paused`, `meta` or `active`. (In the
-- function library these outlive a call: each function clears them as it starts, scripts.py.)
local batch_ready, made_ready = false, false

-- A job was made ready: set the marker if a worker may take it.
local function ready()
  if batch_ready then
    made_ready = true
  elseif may_signal() then
    signal('0', 0)
  end
end

local function flush_ready()
  batch_ready = false
  if made_ready then
    made_ready = false
    ready()
  end
end

-- Into wait. The right end is served next, so "front of the line" is an RPUSH.
local function push_wait(id, front)
  if front then
    redis.call('RPUSH', K.wait, id)
  else
    redis.call('LPUSH', K.wait, id)
  end
  ready()
end

-- Into prioritized: score priority * 2^32 + (pc counter mod 2^32), FIFO per priority.
local function push_prioritized(id, priority)
  local counter = redis.call('INCR', K.pc)
  redis.call('ZADD', K.prioritized, num(priority * 4294967296 + counter % 4294967296), id)
  ready()
end

-- Into delayed: score due_ms * 4096 + the next free sequence number of that millisecond.
local function push_delayed(id, due)
  local low = due * 4096
  local highest = redis.call('ZREVRANGEBYSCORE', K.delayed, num(low + 4095), num(low),
    'WITHSCORES', 'LIMIT', 0, 1)
  local sequence = 0
  if highest[2] then
    sequence = math.min(tonumber(highest[2]) - low + 1, 4095)
  end
  redis.call('ZADD', K.delayed, num(low + sequence), id)
  if not is_paused() then
    signal('1', due)
  end
end

-- The due time (ms) of the first delayed job, or nil.
local function next_due()
  local first = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
  if first[2] then
    return math.floor(tonumber(first[2]) / 4096)
  end
  return nil
end

-- A job taken out of its place made ready to fetch: into prioritized (transition
-- `prioritized`) when its priority is > 0, else into wait (transition `plain`; at the front
-- when `front`).
local function make_ready(id, source, plain, prioritized, front)
  local priority = tonumber(redis.call('HGET', job_key(id), 'priority') or '0') or 0
  if priority > 0 then
    moved(id, prioritized, source)
    push_prioritized(id, priority)
  else
    moved(id, plain, source)
    push_wait(id, front)
  end
end

-- Transition PROMOTE / PROMOTE_PRIORITIZED of a job already taken out of `delayed`.
local function promote(id)
  redis.call('HSET', job_key(id), 'delay', '0')
  make_ready(id, 'delayed', 'PROMOTE', 'PROMOTE_PRIORITIZED', false)
  emit('waiting', 'jobId', id, 'prev', 'delayed')
end

-- Transitions PROMOTE / PROMOTE_PRIORITIZED for every delayed job due at `now`.
local function promote_due(now)
  local due = redis.call('ZRANGEBYSCORE', K.delayed, '-inf', num((now + 1) * 4096 - 1),
    'LIMIT', 0, PROMOTE_LIMIT)
  for _, id in ipairs(due) do
    redis.call('ZREM', K.delayed, id)
    promote(id)
  end
end

-- Transition FETCH, after promoting due jobs. Returns {0} while paused (or maxed) or empty,
-- {0, due} when only delayed jobs remain, {2, ms} while a rate limit holds fetches back, or
-- {1, id, '[field, value, ...]'} (the hash as a JSON array). `paused` and `limits` are what
-- the "limits" include's limits_for returns.
local function fetch(token, lock_px, has_name, worker_name, now, paused, limits)
  -- As BullMQ's moveToActive: due delayed jobs are promoted even while the queue is paused.
  promote_due(now)
  if limits then
    local verdict = limits.gate()
    if verdict > 0 then
      return {2, verdict}
    elseif verdict < 0 then
      return {0}
    end
  end
  if paused then
    return {0}
  end
  local id = redis.call('RPOP', K.wait)
  local source = 'waiting'
  if not id then
    local popped = redis.call('ZPOPMIN', K.prioritized)
    if not popped[1] then
      local due = next_due()
      if due then
        return {0, due}
      end
      return {0}
    end
    id = popped[1]
    source = 'prioritized'
  end
  moved(id, 'FETCH', source)
  redis.call('LPUSH', K.active, id)
  redis.call('SET', lock_key(id), token, 'PX', lock_px)
  local key = job_key(id)
  redis.call('HSET', key, 'processedOn', num(now))
  redis.call('HINCRBY', key, 'ats', 1)
  if has_name == '1' then
    redis.call('HSET', key, 'pb', worker_name)
  end
  if limits then
    limits.count(id)
  end
  emit('active', 'jobId', id, 'prev', 'waiting')
  if (redis.call('LLEN', K.wait) > 0 or redis.call('ZCARD', K.prioritized) > 0)
      and not (limits and limits.maxed()) then
    signal('0', 0)
  end
  -- The hash as one JSON array [field, value, ...] in HGETALL's order: a single bulk string
  -- parses far faster in the client than a nested reply of two elements per field.
  return {1, id, cjson.encode(redis.call('HGETALL', key))}
end

-- The checks every owner-only move makes, in BullMQ's order: the job exists (-1), its lock
-- exists (-2) and holds `token` (-6), it is active (-3). On 0 the id has been taken out of
-- `active` (LREM); on any other code nothing changed.
-- `exists`, when given, is whether the job's hash exists (read by the caller with its fields).
local function check_owner(id, token, exists)
  if exists == nil then
    exists = redis.call('EXISTS', job_key(id)) == 1
  end
  if not exists then
    return -1
  end
  if PLANTED['skip-token-check'] and redis.call('LREM', K.active, 1, id) == 1 then
    return 0
  end
  local lock = redis.call('GET', lock_key(id))
  if not lock then
    return -2
  end
  if lock ~= token then
    return -6
  end
  if redis.call('LREM', K.active, 1, id) == 0 then
    return -3
  end
  return 0
end

-- The rest of leaving `active` (after the LREM): drop the lock and the stalled mark.
local function drop_lock(id)
  redis.call('DEL', lock_key(id))
  redis.call('SREM', K.stalled, id)
end

-- ----------------------------------------------------------------- removal

local function dedup_key(dedup_id)
  return base .. 'de:' .. dedup_id
end

local function dedup_next_key(dedup_id)
  return base .. 'dn:' .. dedup_id
end

-- A job holding `deid` was removed: release de and dn if it owns the key.
local function dedup_removed(deid, id)
  if redis.call('GET', dedup_key(deid)) == id then
    redis.call('DEL', dedup_key(deid), dedup_next_key(deid))
  end
end

-- The deletions that leave the job's deduplication key alone (every other one releases it,
-- as BullMQ's removal paths): retention (the owner has finished, and a key with a TTL must
-- outlive it) and DEBOUNCE (the key passes to the new job).
local KEEPS_DEDUP_KEY = {TRIM = true, DEBOUNCE = true}

-- Transition `transition` of a job already taken out of the structure of `state`: delete its
-- hash, lock and logs (and its stalled mark: an active job's; the script lists `stalled`),
-- release its deduplication key, and detach it from its flow (FLOW.forget, when the script
-- includes "flows"). With `hard` (BullMQ's hard path: clean, drain, obliterate) a parent in
-- this queue left with no pending child is deleted after it (DELETE_PARENT, no event), and so
-- on up the tree. Every removal path goes through here.
local function delete_job(id, state, transition, hard)
  while id do
    local key = job_key(id)
    local deid = redis.call('HGET', key, 'deid')
    local orphan = nil
    if FLOW.forget then
      orphan = FLOW.forget(id, hard)
    end
    moved(id, transition, state)
    redis.call('DEL', key, lock_key(id), logs_key(id))
    if state == 'active' then
      redis.call('SREM', K.stalled, id)
    end
    if deid and not KEEPS_DEDUP_KEY[transition] then
      dedup_removed(deid, id)
    end
    id, state, transition = orphan, 'waiting-children', 'DELETE_PARENT'
  end
end

-- Whether job `id` is its scheduler's current iteration (repeat:<rjk>:<score of rjk in
-- repeat>): remove refuses it, clean and drain skip it, or the schedule would stop (BullMQ's
-- isJobSchedulerJob). Needs K['repeat'].
local function is_current_iteration(id)
  local scheduler_id = redis.call('HGET', job_key(id), 'rjk')
  if not scheduler_id then
    return false
  end
  local slot = redis.call('ZSCORE', K['repeat'], scheduler_id)
  return slot ~= false and id == 'repeat:' .. scheduler_id .. ':' .. num(tonumber(slot))
end

-- Transition TRIM: retention of a finished set (count and age_ms are '' for "no limit").
local function trim(finished, count, age_ms, now)
  if count == '' and age_ms == '' then
    return
  end
  local doomed = {}
  if age_ms ~= '' then
    doomed = redis.call('ZRANGEBYSCORE', finished, '-inf', num(now - tonumber(age_ms)),
      'LIMIT', 0, TRIM_LIMIT)
    if #doomed > 0 then
      redis.call('ZREM', finished, unpack(doomed))
    end
  end
  if count ~= '' then
    local excess = math.min(redis.call('ZCARD', finished) - tonumber(count), TRIM_LIMIT - #doomed)
    if excess > 0 then
      local oldest = redis.call('ZRANGE', finished, 0, excess - 1)
      redis.call('ZREM', finished, unpack(oldest))
      for _, id in ipairs(oldest) do
        doomed[#doomed + 1] = id
      end
    end
  end
  local source = 'failed'
  if finished == K.completed then
    source = 'completed'
  end
  for _, id in ipairs(doomed) do
    delete_job(id, source, 'TRIM')
  end
end

-- Transition FAIL for a job already taken out of `active`, then retention.
local function finish_failed(id, reason, count, age_ms, now)
  local key = job_key(id)
  redis.call('HSET', key, 'failedReason', reason, 'finishedOn', num(now))
  redis.call('HDEL', key, 'defa')
  moved(id, 'FAIL', 'active')
  redis.call('ZADD', K.failed, num(now), id)
  emit('failed', 'jobId', id, 'failedReason', reason, 'prev', 'active')
  if FLOW.child_failed then
    FLOW.child_failed(id, reason, now)
  end
  trim(K.failed, count, age_ms, now)
end

-- The decoded JSON text `raw`, or an empty table if it is not a JSON object (or nil).
local function decode_object(raw)
  if not raw then
    return {}
  end
  local ok, decoded = pcall(cjson.decode, raw)
  if ok and type(decoded) == 'table' then
    return decoded
  end
  return {}
end

-- The decoded `opts` field of a job, or an empty table if it is not a JSON object.
local function job_opts(id)
  return decode_object(redis.call('HGET', job_key(id), 'opts'))
end

-- BullMQ's removeOnFail / removeOnComplete as (count, age_ms), '' meaning "no limit":
-- true -> keep none, a number -> keep that many, {count, age (s)} -> both limits.
local function keep_from(spec)
  if spec == true then
    return '0', ''
  end
  if type(spec) == 'number' and spec >= 0 then
    return num(spec), ''
  end
  if type(spec) == 'table' then
    local count, age_ms = '', ''
    if type(spec.count) == 'number' and spec.count >= 0 then
      count = num(spec.count)
    end
    if type(spec.age) == 'number' and spec.age >= 0 then
      age_ms = num(spec.age * 1000)
    end
    return count, age_ms
  end
  return '', ''
end

-- The id of a job being added, ARGV's `custom_id` or else the counter's next value (BullMQ
-- INCRs the counter on every add, custom id or not), and whether a job of that id exists
-- already (it is left untouched: event "duplicated"). `counter`: the counter's value for this
-- job when the caller INCRBYs it once for many jobs.
local function new_job_id(custom_id, counter)
  counter = counter or redis.call('INCR', K.id)
  local id = custom_id
  if id == '' then
    id = tostring(counter)
  end
  if redis.call('EXISTS', job_key(id)) == 1 then
    emit('duplicated', 'jobId', id)
    return id, true
  end
  return id, false
end

-- The transitions that place a new job, by where it goes.
local ADD_MOVES = {wait = 'ADD', prioritized = 'ADD_PRIORITIZED', delayed = 'ADD_DELAYED'}

-- Store a new job's hash and place it (`moves`, ADD_MOVES when nil), with its events. `deid`
-- and `rjk` (or nil) are its deduplication id and job scheduler, stored as BullMQ's job fields
-- of those names.
local function store_new_job(id, name, data, opts, timestamp, delay, priority, lifo, deid,
    moves, rjk)
  moves = moves or ADD_MOVES
  local key = job_key(id)
  redis.call('HSET', key, 'name', name, 'data', data, 'opts', opts, 'timestamp', timestamp,
    'delay', num(delay), 'priority', num(priority))
  if deid then
    redis.call('HSET', key, 'deid', deid)
  end
  if rjk then
    redis.call('HSET', key, 'rjk', rjk)
  end
  emit('added', 'jobId', id, 'name', name)
  if delay > 0 then
    local due = tonumber(timestamp) + delay
    moved(id, moves.delayed, nil)
    push_delayed(id, due)
    emit('delayed', 'jobId', id, 'delay', num(due))
  else
    if priority > 0 then
      moved(id, moves.prioritized, nil)
      push_prioritized(id, priority)
    else
      moved(id, moves.wait, nil)
      push_wait(id, lifo)
    end
    emit('waiting', 'jobId', id)
  end
end
