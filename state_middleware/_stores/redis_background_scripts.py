"""The Lua scripts behind ``RedisStore``'s background responses: each reads or changes a
response's state, events and lease in one atomic step, so one round trip, and nothing
half written is ever read back. Each script is preceded by its ``KEYS`` and ``ARGV``;
TTLs are in milliseconds.
"""

__all__ = [
    "BACKGROUND",
    "CANCEL_BACKGROUND",
    "FAIL_LOST",
    "FINISH_BACKGROUND",
    "READ_EVENTS",
    "RECORD_EVENTS",
    "START_BACKGROUND",
]

# Helpers for the background scripts. KEYS: the response's state (a hash), its events (a
# stream: event n has the id 0-<n+1>, and the id 1-0 marks the end, so a reader blocked
# on the stream wakes when it finishes and no event can follow) and its worker's lease.
_BACKGROUND = """
local state, events, lease = KEYS[1], KEYS[2], KEYS[3]

local function finished(status)
  return status ~= 'queued' and status ~= 'in_progress'
end

-- {status, response, stream, cancel, event count, 1 if the lease lives else 0}, or
-- false when there is no such response.
local function read()
  local found = redis.call('HMGET', state, 'status', 'response', 'stream', 'cancel', 'events')
  if not found[1] then
    return false
  end
  found[6] = redis.call('EXISTS', lease)
  return found
end

-- The state of a response its worker may still write to; else false and what to answer:
-- `gone` when there is no such response or it finished, the response object when its
-- lease ended (the caller then fails it as lost).
local function running(gone)
  local found = read()
  if not found or finished(found[1]) then
    return false, gone
  end
  if found[6] == 0 then
    return false, found[2]
  end
  return found
end

-- Appends ARGV[first..] as the events numbered on from `count`; returns the new count.
local function append(count, first)
  for i = first, #ARGV do
    redis.call('XADD', events, string.format('0-%d', count + 1), 'e', ARGV[i])
    count = count + 1
  end
  return count
end

local function finish(status, response, count, event_ttl, ttl)
  redis.call('XADD', events, '1-0', 'end', status)
  redis.call('HSET', state, 'status', status, 'response', response, 'events', count)
  redis.call('PEXPIRE', events, event_ttl)
  redis.call('PEXPIRE', state, ttl)
  redis.call('DEL', lease)
end
"""

# KEYS: as _BACKGROUND. ARGV: the queued response, stream ('1' or '0'), lease, ttl (ms).
# Starts it afresh (events of an earlier run under the same id are dropped).
START_BACKGROUND = (
    _BACKGROUND
    + """
redis.call('DEL', state, events)
redis.call('HSET', state, 'status', 'queued', 'response', ARGV[1], 'stream', ARGV[2],
  'cancel', 0, 'events', 0)
redis.call('PEXPIRE', state, ARGV[4])
redis.call('SET', lease, 1, 'PX', ARGV[3])
return 1
"""
)

# KEYS: as _BACKGROUND. ARGV: status, lease, ttl (ms), the events. Returns 1 (stop) when
# there is no such running response or a cancel was asked for, else 0; the response
# object when the lease had already ended (the caller fails it as lost: stop too).
RECORD_EVENTS = (
    _BACKGROUND
    + """
local found, answer = running(1)
if not found then
  return answer
end
local count = append(tonumber(found[5]), 4)
redis.call('HSET', state, 'status', ARGV[1], 'events', count)
redis.call('PEXPIRE', state, ARGV[3])
redis.call('PEXPIRE', events, ARGV[3])
redis.call('PEXPIRE', lease, ARGV[2])
if found[4] == '1' then
  return 1
end
return 0
"""
)

# KEYS: as _BACKGROUND. ARGV: status, response, event ttl, ttl (ms), the last events.
# Ends a running response; one that is already finished (or gone) is left as it is.
# Returns 1 if it ended it, 0 if not; the response object when the lease had already
# ended (the caller fails it as lost instead).
FINISH_BACKGROUND = (
    _BACKGROUND
    + """
local found, answer = running(0)
if not found then
  return answer
end
finish(ARGV[1], ARGV[2], append(tonumber(found[5]), 5), ARGV[3], ARGV[4])
return 1
"""
)

# KEYS: as _BACKGROUND. ARGV: the response object read, the failed one, event ttl, ttl
# (ms), the worker-lost message as a JSON string. Compare-and-set: fails the response as
# lost only if it is still unfinished, without a lease and holding that response object,
# so of several replicas that found its worker lost, exactly one writes. Returns the
# state as read() does, after.
FAIL_LOST = (
    _BACKGROUND
    + """
local found = read()
if found and not finished(found[1]) and found[6] == 0 and found[2] == ARGV[1] then
  -- the events that end a failed stream: error, then response.failed (as the Python
  -- side's failure_events writes them)
  local n = tonumber(found[5])
  redis.call('XADD', events, string.format('0-%d', n + 1), 'e',
    '{"type":"error","sequence_number":' .. string.format('%d', n) ..
    ',"code":"server_error","message":' .. ARGV[5] .. ',"param":null}')
  redis.call('XADD', events, string.format('0-%d', n + 2), 'e',
    '{"type":"response.failed","sequence_number":' .. string.format('%d', n + 1) ..
    ',"response":' .. ARGV[2] .. '}')
  finish('failed', ARGV[2], n + 2, ARGV[3], ARGV[4])
  found = read()
end
return found
"""
)

# KEYS: as _BACKGROUND. Returns the state as read() does.
BACKGROUND = _BACKGROUND + "\nreturn read()\n"

# KEYS: as _BACKGROUND. Asks a running response to stop; returns the state as read()
# does, after.
CANCEL_BACKGROUND = (
    _BACKGROUND
    + """
local found = read()
if found and not finished(found[1]) and found[6] == 1 then
  redis.call('HSET', state, 'cancel', 1)
  found[4] = '1'
end
return found
"""
)

# KEYS: as _BACKGROUND. ARGV: the id of the last event already read ('0-0': none).
# Returns {state as read() does, the stream entries after that id (the end marker among
# them once finished)}, or nil when there is no such response or its events expired.
READ_EVENTS = (
    _BACKGROUND
    + """
local found = read()
if not found or (finished(found[1]) and redis.call('EXISTS', events) == 0) then
  return false
end
return {found, redis.call('XRANGE', events, '(' .. ARGV[1], '+')}
"""
)
