#!lua flags=allow-oom
--[[
  trim_events: trim the event stream to about `max_length` entries (XTRIM MAXLEN ~, as
  BullMQ's Queue.trimEvents: Redis removes whole stream nodes only, so a few more may stay).

  KEYS: events
  ARGV:
    1  base: "<prefix>:<queue>:"
    2  max_length
  Returns: the number of entries removed.
  Transitions: none
]]

return redis.call('XTRIM', K.events, 'MAXLEN', '~', ARGV[2])
