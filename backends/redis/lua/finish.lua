#!lua
--[[
  finish: apply an attempt's outcome to an active job whose lock holds the token, and
  optionally fetch the next job in the same step (BullMQ's fetch-next).

  KEYS: wait active prioritized delayed completed failed stalled pc marker events meta id limiter
  ARGV:
    1   base: "<prefix>:<queue>:"
    2   job id
    3   token
    4   now (ms)
    5   outcome: "complete" | "fail" | "retry_later" | "retry_now"
    6   complete: return value (JSON); otherwise: failure reason
    7   stacktrace (JSON list; unused for complete)
    8   retention count for complete/fail, "" = no limit
    9   retention age (ms) for complete/fail, "" = no limit
    10  retry_later: delay (ms)
    11  "1" to fetch the next job afterwards, else "0"
    12  fetch: token
    13  fetch: lock TTL for PX (ms)
    14  fetch: "1" if a worker name follows
    15  fetch: worker name
    16  fetch: the worker's limiter max, "" for none
    17  fetch: the worker's limiter duration (ms), "" for none
  Returns: {code} or, when the finish succeeded and a fetch was asked for, {code, fetched}
    where fetched is what fetch_next returns. Codes: 0 ok, -1 missing job, -2 missing lock,
    -3 not active, -6 lock held by another token; on a non-zero code nothing changed.
  Idempotent per token: the job hash records each finish applied to it in a field of its own,
    "fin:" token = outcome ":" [the job it fetched as "<#id>:<id><token>"]. The same finish sent
    again (its reply was lost) changes nothing and gets {0} ({0, {0}} if it asks to fetch), or
    {0, {1, id, hash, token}}: the job the first one fetched, while that job still holds the
    lock it got (re-armed for ARGV[13] ms, as a fresh fetch's).
  Flows: a child's completion or final failure is recorded into its parent here (see the
    "flows" include); a parent completing with pending children gets -4, with a child failed
    by fail_parent_on_failure -9 (nothing changed).
  Transitions: COMPLETE, FAIL, TRIM, RETRY_LATER, RETRY, RETRY_PRIORITIZED, PROMOTE,
    PROMOTE_PRIORITIZED, FETCH, ADD, ADD_PRIORITIZED, ADD_DELAYED (a job parked by
    deduplication's keep_last_if_active is stored when its owner finishes), RELEASE_PARENT,
    RELEASE_PARENT_PRIORITIZED, RELEASE_PARENT_DELAYED
]]
--- @include "common"
--- @include "dedup"
--- @include "limits"
--- @include "flows"

local id, token, now, outcome = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local key = job_key(id)

-- The answer to a finish already applied under this token with this outcome, or nil.
local function repeated()
  if PLANTED['finish-not-idempotent'] then
    return nil
  end
  local record = redis.call('HGET', key, 'fin:' .. token)
  if not record or string.sub(record, 1, #outcome + 1) ~= outcome .. ':' then
    return nil
  end
  if ARGV[11] ~= '1' then
    return {0}
  end
  local fetched = string.sub(record, #outcome + 2)
  if fetched == '' then
    return {0, {0}}
  end
  local colon = string.find(fetched, ':', 1, true)
  local length = tonumber(string.sub(fetched, 1, colon - 1))
  local next_id = string.sub(fetched, colon + 1, colon + length)
  local next_token = string.sub(fetched, colon + length + 1)
  if redis.call('GET', lock_key(next_id)) ~= next_token then
    return {0, {0}}
  end
  redis.call('SET', lock_key(next_id), next_token, 'PX', ARGV[13])
  return {0, {1, next_id, cjson.encode(redis.call('HGETALL', job_key(next_id))), next_token}}
end

-- (an empty set is no key: one EXISTS tells whether either check needs a closer look)
if outcome == 'complete'
    and redis.call('EXISTS', key .. ':dependencies', key .. ':unsuccessful') > 0 then
  if redis.call('SCARD', key .. ':dependencies') > 0 then
    return {-4}
  end
  return {-9}
end
-- (read first: retention may delete the job; parent and parentKey as parent_of takes them;
-- every job hash has `timestamp`, so this read also tells check_owner whether the job exists)
local links = redis.call('HMGET', key, 'parent', 'parentKey', 'deid', 'atm', 'timestamp')
local code = check_owner(id, token, links[5] ~= false)
if code ~= 0 then
  if code ~= -1 then
    local answer = repeated()
    if answer then
      return answer
    end
  end
  return {code}
end
drop_lock(id)
local deid = links[3]
local attempts_made = (tonumber(links[4]) or 0) + 1
-- The outcome's first HSET: its fields, the attempt count (no HINCRBY of its own) and the
-- record of this finish, field "fin:" token (written again below with the job a fetch took).
local record = 'fin:' .. token
local function set_fields(...)
  redis.call('HSET', key, record, outcome .. ':', 'atm', attempts_made, ...)
end
if outcome == 'complete' then
  set_fields('returnvalue', ARGV[6], 'finishedOn', num(now))
  moved(id, 'COMPLETE', 'active')
  redis.call('ZADD', K.completed, num(now), id)
  emit('completed', 'jobId', id, 'returnvalue', ARGV[6], 'prev', 'active')
  if links[1] or links[2] then
    child_completed(id, ARGV[6], now, links)
  end
  trim(K.completed, ARGV[8], ARGV[9], now)
  if deid then
    dedup_finished(deid, id, now)
  end
elseif outcome == 'fail' then
  set_fields('stacktrace', ARGV[7])
  -- Read before finish_failed: its retention may delete the job.
  local attempts = tonumber(job_opts(id).attempts) or 0
  finish_failed(id, ARGV[6], ARGV[8], ARGV[9], now)
  if attempts_made >= attempts then
    emit('retries-exhausted', 'jobId', id, 'attemptsMade', attempts_made)
  end
  if deid then
    dedup_finished(deid, id, now)
  end
else
  set_fields('failedReason', ARGV[6], 'stacktrace', ARGV[7])
  if outcome == 'retry_later' then
    local due = now + tonumber(ARGV[10])
    redis.call('HSET', key, 'delay', ARGV[10])
    moved(id, 'RETRY_LATER', 'active')
    push_delayed(id, due)
    emit('delayed', 'jobId', id, 'delay', num(due))
  else
    promote_due(now)
    local priority = tonumber(redis.call('HGET', key, 'priority') or '0') or 0
    if priority > 0 then
      moved(id, 'RETRY_PRIORITIZED', 'active')
      push_prioritized(id, priority)
    else
      moved(id, 'RETRY', 'active')
      push_wait(id, job_opts(id).lifo == true)
    end
    emit('waiting', 'jobId', id, 'prev', 'active')
  end
end
if redis.call('LLEN', K.wait) == 0 and redis.call('ZCARD', K.prioritized) == 0
    and redis.call('LLEN', K.active) == 0 then
  emit('drained')
end
if ARGV[11] == '1' then
  local fetched = fetch(ARGV[12], ARGV[13], ARGV[14], ARGV[15], now,
    limits_for(ARGV[16], ARGV[17]))
  -- (retention, when asked for, may have deleted the finished job: HSET would make a stray
  -- hash)
  if fetched[1] == 1 and ((ARGV[8] == '' and ARGV[9] == '') or redis.call('EXISTS', key) == 1) then
    redis.call('HSET', key, record, outcome .. ':' .. #fetched[2] .. ':' .. fetched[2] .. ARGV[12])
  end
  return {0, fetched}
end
return {0}
