#!lua flags=no-writes
--[[
  get_dependencies: a parent's children by outcome, read at one instant.

  KEYS: meta
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  job id
  Returns: {processed [key, value, ...], pending keys, failed [key, reason, ...],
    unsuccessful keys (oldest failure first)}
  Transitions: none (read only)
]]

local key = base .. ARGV[2]
return {
  redis.call('HGETALL', key .. ':processed'),
  redis.call('SMEMBERS', key .. ':dependencies'),
  redis.call('HGETALL', key .. ':failed'),
  redis.call('ZRANGE', key .. ':unsuccessful', 0, -1),
}
