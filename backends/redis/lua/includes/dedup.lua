--[[
  Deduplication (BullMQ 6.7's `de:<id>` / `dn:<id>` keys and the job field `deid`), after
  `--- @include "common"`. The decision mirrors corral.engine.deduplication.decide step for
  step (the memory backend applies that function); keep the two in the same order.

  deduplicate(...)      the add-time step; needs K.delayed, K.active, K.events
  dedup_finished(...)   release on final completion/failure, then store the parked job;
                        needs K.id and what store_new_job needs
  add_new_job(...)      deduplicate, then store_new_job: the add step of add_jobs and add_flow
  (the release on removal, dedup_removed, is common's: delete_job makes it)
  A key with a ttl is SET with PX ttl - 1: held during [t, t + ttl), as the engine's locks.
]]

local function claim_dedup(key, job_id, ttl)
  if ttl then
    redis.call('SET', key, job_id, 'PX', math.max(ttl - 1, 1))
  else
    redis.call('SET', key, job_id)
  end
end

-- The `de` option of a decoded opts table (BullMQ's camelCase), or nil.
local function dedup_option(opts)
  local de = opts.de
  if type(de) ~= 'table' or (type(de.id) ~= 'string' and type(de.id) ~= 'number')
      or de.id == '' then
    return nil
  end
  local ttl = tonumber(de.ttl)
  if ttl and ttl <= 0 then
    ttl = nil
  end
  local option = {id = tostring(de.id), ttl = ttl, extend = de.extend == true,
    replace = de.replace == true, reschedule = de.reschedule == true,
    keep = de.keepLastIfActive == true}
  -- keep_last_if_active keeps the key until the owner finishes: its ttl is ignored.
  option.key_ttl = ttl
  if option.keep then
    option.key_ttl = nil
  end
  return option
end

local function emit_deduplicated(job_id, dedup_id, other_id)
  emit('deduplicated', 'jobId', job_id, 'deduplicationId', dedup_id, 'deduplicatedJobId', other_id)
end

-- The deduplication step of adding job `id`: returns the owner's id when the add is dropped,
-- else nil and the dedup id once the key is claimed for the new job (nil, nil without one).
-- Transitions: DEBOUNCE (the delayed owner is replaced), RESCHEDULE (it is moved).
local function deduplicate(id, opts_json, timestamp, delay, custom_id, name, data)
  if not string.find(opts_json, '"de":', 1, true) then
    return nil, nil
  end
  local option = dedup_option(decode_object(opts_json))
  if not option then
    return nil, nil
  end
  local key, next_key = dedup_key(option.id), dedup_next_key(option.id)
  local owner = redis.call('GET', key)
  if PLANTED['dedup-ignores-owner'] then
    owner = false
  end
  if not owner then
    claim_dedup(key, id, option.key_ttl)
    return nil, option.id
  end
  local has_ttl = redis.call('PTTL', key) >= 0
  local state = nil
  if redis.call('ZSCORE', K.delayed, owner) then
    state = 'delayed'
  elseif redis.call('LPOS', K.active, owner) then
    state = 'active'
  elseif redis.call('EXISTS', job_key(owner)) == 1 then
    state = 'other'
  end
  if option.replace and state == 'delayed' then
    redis.call('ZREM', K.delayed, owner)
    delete_job(owner, 'delayed', 'DEBOUNCE')
    emit('removed', 'jobId', owner, 'prev', 'delayed')
    emit_deduplicated(id, option.id, owner)
    redis.call('DEL', next_key)
    if not option.keep and option.ttl and not option.extend then
      redis.call('SET', key, id, 'KEEPTTL')
    else
      claim_dedup(key, id, option.key_ttl)
    end
    return nil, option.id
  end
  if not has_ttl and state == nil then  -- a key that outlived its owner (BullMQ #4311)
    redis.call('DEL', next_key)
    claim_dedup(key, id, option.key_ttl)
    return nil, option.id
  end
  if option.keep and state == 'active' then
    redis.call('DEL', next_key)
    redis.call('HSET', next_key, 'name', name, 'data', data, 'opts', opts_json)
    if custom_id ~= '' then
      redis.call('HSET', next_key, 'jid', custom_id)
    end
    redis.call('PERSIST', key)
  elseif option.replace then
    return owner, nil  -- no event
  elseif option.ttl and option.extend then
    claim_dedup(key, owner, option.key_ttl)
  end
  emit_deduplicated(owner, option.id, id)
  if option.reschedule and state == 'delayed' then
    local due = tonumber(timestamp) + delay
    redis.call('ZREM', K.delayed, owner)
    redis.call('HSET', job_key(owner), 'delay', num(delay))
    moved(owner, 'RESCHEDULE', 'delayed')
    push_delayed(owner, due)
    emit('delayed', 'jobId', owner, 'delay', num(due))
  end
  return owner, nil
end

-- A job holding `deid` completed or failed for good: release its key (unless the key has a
-- TTL or another owner), then store the job parked in dn:<id>, if any.
local function dedup_finished(deid, id, now)
  local key, next_key = dedup_key(deid), dedup_next_key(deid)
  if redis.call('GET', key) == id and redis.call('PTTL', key) == -1 then
    redis.call('DEL', key)
  end
  if redis.call('EXISTS', next_key) == 0 then
    return
  end
  local parked = {}
  local flat = redis.call('HGETALL', next_key)
  for i = 1, #flat, 2 do
    parked[flat[i]] = flat[i + 1]
  end
  redis.call('DEL', next_key)
  local counter = redis.call('INCR', K.id)  -- (always, as BullMQ: the counter stays monotonic)
  local next_id = parked.jid or tostring(counter)
  if redis.call('EXISTS', job_key(next_id)) == 1 then
    return
  end
  local opts = decode_object(parked.opts)
  local option = dedup_option(opts)
  claim_dedup(key, next_id, option and option.key_ttl)
  store_new_job(next_id, parked.name, parked.data, parked.opts, now,
    tonumber(opts.delay) or 0, tonumber(opts.priority) or 0, opts.lifo == true, deid)
end

-- Add a job whose id is free: dropped by deduplication (returns the owner's id and 0), or
-- stored and placed by store_new_job (returns its id and 1).
local function add_new_job(id, name, data, opts, timestamp, delay, priority, lifo, custom_id)
  local owner, deid = deduplicate(id, opts, timestamp, delay, custom_id, name, data)
  if owner then
    return owner, 0
  end
  store_new_job(id, name, data, opts, timestamp, delay, priority, lifo, deid)
  return id, 1
end
