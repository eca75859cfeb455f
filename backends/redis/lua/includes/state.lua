--[[
  job_state(id): the state a job is in, from the structures that hold it (BullMQ's getState
  order), or nil. Needs K.wait, K.active, K.prioritized, K.delayed, K.completed, K.failed,
  K.waiting_children.
  take_out(id, state): the move out of that structure (a script that writes).
]]

local function job_state(id)
  for _, state in ipairs({'completed', 'failed', 'delayed', 'prioritized'}) do
    if redis.call('ZSCORE', K[state], id) then
      return state
    end
  end
  if redis.call('LPOS', K.active, id) then
    return 'active'
  end
  if redis.call('LPOS', K.wait, id) then
    return 'waiting'
  end
  if redis.call('ZSCORE', K.waiting_children, id) then
    return 'waiting-children'
  end
  return nil
end

-- Take a job out of the structure of `state` (what job_state returned).
local function take_out(id, state)
  if state == 'waiting' then
    redis.call('LREM', K.wait, 1, id)
  elseif state == 'active' then
    redis.call('LREM', K.active, 1, id)
  elseif state == 'waiting-children' then
    redis.call('ZREM', K.waiting_children, id)
  else
    redis.call('ZREM', K[state], id)
  end
end
