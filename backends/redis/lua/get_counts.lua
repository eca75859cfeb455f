#!lua flags=no-writes
--[[
  get_counts: the number of jobs in each state, read in one atomic step.

  KEYS: wait prioritized delayed active completed failed waiting-children
  ARGV:
    1  base: "<prefix>:<queue>:"
  Returns: {waiting, prioritized, delayed, active, completed, failed, waiting-children}
  Transitions: none (read only)
]]

return {
  redis.call('LLEN', K.wait),
  redis.call('ZCARD', K.prioritized),
  redis.call('ZCARD', K.delayed),
  redis.call('LLEN', K.active),
  redis.call('ZCARD', K.completed),
  redis.call('ZCARD', K.failed),
  redis.call('ZCARD', K.waiting_children),
}
