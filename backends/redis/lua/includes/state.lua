--[[
  job_state(id): the state a job is in, from the structures that hold it (BullMQ's getState
  order), or nil. Needs K.wait, K.active, K.prioritized, K.delayed, K.completed, K.failed,
  K.waiting_children.
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
