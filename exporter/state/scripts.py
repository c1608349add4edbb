"""The stateful rules' transitions as Redis Lua scripts.

Each script is one rule's transition for one event, run atomically by the
server, so replicas touching the same group never interleave: the one
observation that completes a threshold or a sequence sees it complete and
deletes the group, every other one sees it in progress. They follow the
in-memory states (exporter.detect.state) on event time: each rule keeps a
watermark (the newest event time any replica saw); a window or TTL is
measured back from it.

Common arguments: KEYS[1] the rule's watermark key, ARGV[1] the event time
(Python's repr of a float, exact), ARGV[2] the window or TTL in seconds,
ARGV[3] the keys' lifetime in milliseconds (window plus grace). Times are
written back with %.17g, which keeps a double exact.
"""

from __future__ import annotations

# Sets the watermark; leaves t, horizon in locals.
_PRELUDE = """
local t = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local wm = tonumber(redis.call('GET', KEYS[1]))
if wm == nil or t > wm then
  wm = t
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
end
local horizon = wm - window
"""

# KEYS[2]: the group's sorted set of event times (members: the events).
# ARGV[4]: count; ARGV[5]: the event's identity.
THRESHOLD = (
    _PRELUDE
    + """
if t < horizon then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%.17g', horizon))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[5])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[2])
  return 1
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 0
"""
)

# KEYS[2]: the group's hash of distinct value -> newest time.
# ARGV[4]: count; ARGV[5]: the distinct value.
DISTINCT = (
    _PRELUDE
    + """
if t < horizon then return 0 end
local h = redis.call('HGETALL', KEYS[2])
for i = 1, #h, 2 do
  if tonumber(h[i + 1]) < horizon then redis.call('HDEL', KEYS[2], h[i]) end
end
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[5]))
if last == nil or t > last then redis.call('HSET', KEYS[2], ARGV[5], ARGV[1]) end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[2])
  return 1
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 0
"""
)

# KEYS[2]: the group's hash {start, step, n}.
# ARGV[4]: the steps the event matches ("1" or "0" per step, in order);
# ARGV[5]: each step's count, comma-separated.
SEQUENCE = (
    _PRELUDE
    + """
local counts = {}
for c in string.gmatch(ARGV[5], '[^,]+') do counts[#counts + 1] = tonumber(c) end
local p = redis.call('HMGET', KEYS[2], 'start', 'step', 'n')
local start, step, n = tonumber(p[1]), tonumber(p[2]), tonumber(p[3])
if start ~= nil and (start < horizon or t - start > window) then
  redis.call('DEL', KEYS[2])
  start = nil
end
if start == nil then
  if t < horizon or string.sub(ARGV[4], 1, 1) ~= '1' then return 0 end
  start, step, n = t, 0, 0
  redis.call('HSET', KEYS[2], 'start', ARGV[1])
elseif string.sub(ARGV[4], step + 1, step + 1) ~= '1' then
  return 0
end
n = n + 1
if n >= counts[step + 1] then
  step = step + 1
  n = 0
  if step == #counts then
    redis.call('DEL', KEYS[2])
    return 1
  end
end
redis.call('HSET', KEYS[2], 'step', step, 'n', n)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 0
"""
)

# KEYS[2]: when the rule first saw an event (its learning period starts);
# KEYS[3]: the (group, value) pair's newest time. ARGV[4]: learning seconds.
FIRST_SEEN = (
    _PRELUDE
    + """
local started = tonumber(redis.call('GET', KEYS[2]))
if started == nil then
  started = t
  redis.call('SET', KEYS[2], ARGV[1])
end
local last = tonumber(redis.call('GET', KEYS[3]))
if last ~= nil and last < horizon then last = nil end
local new = last == nil or t - last > window
if last == nil or t > last then redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3]) end
if new and t >= started + tonumber(ARGV[4]) then return 1 end
return 0
"""
)
