"""The stateful rules' transitions, and the dedupe window's writes, as Redis
Lua scripts: one call per batch.

:data:`OBSERVE` applies a whole batch's observations, in order, in one
atomic call, so replicas touching the same group never interleave: the one
observation that completes a threshold or a sequence sees it complete and
deletes the group, every other one sees it in progress. The transitions
follow the in-memory states (exporter.detect.state) on event time: each
rule keeps a watermark (the newest event time any replica saw); a window
or TTL is measured back from it.

Each observation takes seven ARGV entries: its kind (``t`` threshold, ``d``
distinct, ``s`` sequence, ``f`` first_seen), the event time (Python's repr
of a float, exact), the window or TTL in seconds, the keys' lifetime in
milliseconds (window plus grace), two that depend on the kind, and the
event's identity (so that one event taken twice counts once); and
KEYS entries: the rule's watermark, then the group's key (and, for
first_seen, the pair's key after the rule's start key). Times written back
use %.17g, which keeps a double exact. The answer is one 0 or 1 per
observation (1: the rule fired).
"""

from __future__ import annotations

OBSERVE = """
local function horizon_of(wmkey, ts, t, window, life)
  local wm = tonumber(redis.call('GET', wmkey))
  if wm == nil or t > wm then
    wm = t
    redis.call('SET', wmkey, ts, 'PX', life)
  end
  return wm - window
end

-- the group's sorted set of event times (members: the events)
local function threshold(key, ts, t, horizon, life, count, member)
  if t < horizon then return 0 end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. string.format('%.17g', horizon))
  redis.call('ZADD', key, ts, member)
  if redis.call('ZCARD', key) >= tonumber(count) then
    redis.call('DEL', key)
    return 1
  end
  redis.call('PEXPIRE', key, life)
  return 0
end

-- the group's hash of distinct value -> newest time
local function distinct(key, ts, t, horizon, life, count, value)
  if t < horizon then return 0 end
  local h = redis.call('HGETALL', key)
  for i = 1, #h, 2 do
    if tonumber(h[i + 1]) < horizon then redis.call('HDEL', key, h[i]) end
  end
  local last = tonumber(redis.call('HGET', key, value))
  if last == nil or t > last then redis.call('HSET', key, value, ts) end
  if redis.call('HLEN', key) >= tonumber(count) then
    redis.call('DEL', key)
    return 1
  end
  redis.call('PEXPIRE', key, life)
  return 0
end

-- the group's hash {start, step, n, and "m:" .. member for each event counted};
-- mask: "1" or "0" per step, in order; counts: each step's count, comma-separated
local function sequence(key, ts, t, horizon, window, life, mask, counts_text, member)
  local counts = {}
  for c in string.gmatch(counts_text, '[^,]+') do counts[#counts + 1] = tonumber(c) end
  local p = redis.call('HMGET', key, 'start', 'step', 'n')
  local start, step, n = tonumber(p[1]), tonumber(p[2]), tonumber(p[3])
  if start ~= nil and (start < horizon or t - start > window) then
    redis.call('DEL', key)
    start = nil
  end
  if start == nil then
    if t < horizon or string.sub(mask, 1, 1) ~= '1' then return 0 end
    step, n = 0, 0
    redis.call('HSET', key, 'start', ts)
  elseif string.sub(mask, step + 1, step + 1) ~= '1' then
    return 0
  elseif redis.call('HEXISTS', key, 'm:' .. member) == 1 then
    return 0
  end
  n = n + 1
  if n >= counts[step + 1] then
    step = step + 1
    n = 0
    if step == #counts then
      redis.call('DEL', key)
      return 1
    end
  end
  redis.call('HSET', key, 'step', step, 'n', n, 'm:' .. member, '1')
  redis.call('PEXPIRE', key, life)
  return 0
end

-- started: when the rule first saw an event (its learning period starts);
-- pair: the (group, value) pair's newest time
local function first_seen(started_key, pair, ts, t, horizon, window, life, learning)
  local started = tonumber(redis.call('GET', started_key))
  if started == nil then
    started = t
    redis.call('SET', started_key, ts)
  end
  local last = tonumber(redis.call('GET', pair))
  if last ~= nil and last < horizon then last = nil end
  local new = last == nil or t - last > window
  if last == nil or t > last then redis.call('SET', pair, ts, 'PX', life) end
  if new and t >= started + tonumber(learning) then return 1 end
  return 0
end

local out = {}
local k = 1
for i = 1, #ARGV, 7 do
  local kind, ts, window, life = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local x, y, member = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local t = tonumber(ts)
  local horizon = horizon_of(KEYS[k], ts, t, window, life)
  if kind == 't' then
    out[#out + 1] = threshold(KEYS[k + 1], ts, t, horizon, life, x, member)
    k = k + 2
  elseif kind == 'd' then
    out[#out + 1] = distinct(KEYS[k + 1], ts, t, horizon, life, x, y)
    k = k + 2
  elseif kind == 's' then
    out[#out + 1] = sequence(KEYS[k + 1], ts, t, horizon, window, life, x, y, member)
    k = k + 2
  else
    out[#out + 1] = first_seen(KEYS[k + 1], KEYS[k + 2], ts, t, horizon, window, life, x)
    k = k + 3
  end
end
return out
"""

# KEYS: a batch's dedupe keys. Answers the positions (from 1) of those that
# exist: a short answer for the usual batch, where none does.
SEEN = """
local out = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then out[#out + 1] = i end
end
return out
"""

# KEYS: a batch's dedupe keys; ARGV[1]: how long they are kept (ms).
REMEMBER = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], '1', 'PX', ARGV[1])
end
return #KEYS
"""
