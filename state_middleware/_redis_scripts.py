"""The Lua scripts behind ``RedisStore``: each walks parent links or a conversation's
item list inside Redis, so a chain or a conversation of any length costs one round
trip, and each runs atomically, so nothing half written is ever read back.

TTLs are in milliseconds; a TTL of 0 means "never expires". Keys a script builds itself
come from the bases it is given (``turns``, ``items``): every key of one owner.
"""

__all__ = [
    "ADD_ITEMS",
    "BACKGROUND",
    "CANCEL_BACKGROUND",
    "CONVERSATION",
    "CONVERSATION_ITEMS",
    "DELETE",
    "FAIL_LOST",
    "FINISH_BACKGROUND",
    "FORGET_ITEMS",
    "GET_CHAIN",
    "GET_ITEMS",
    "LOCK",
    "PUT",
    "READ_EVENTS",
    "RECORD_EVENTS",
    "REMOVE_ITEM",
    "START_BACKGROUND",
    "UNLOCK",
]

# Helpers for every script that sets a TTL.
_TTL = """
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local function expire(key, ttl)
  if ttl == 0 then
    redis.call('PERSIST', key)
  else
    redis.call('PEXPIRE', key, ttl)
  end
end

-- Makes a key live at least `ttl` more, never shorter than it already would; returns
-- whether it exists.
local function extend(key, ttl)
  local left = redis.call('PTTL', key)
  if left == -2 then
    return false
  end
  if left >= 0 and (ttl == 0 or left < ttl) then
    expire(key, ttl)
  end
  return true
end
"""

# Helpers for scripts about items and conversations. ARGV[1..5]: item key base, turn
# key base, conversation ttl, ttl of what a conversation names ("kept"), how often a
# conversation in use refreshes what it names.
_ITEMS = (
    _TTL
    + """
local items, turns = ARGV[1], ARGV[2]
local talk_ttl, kept_ttl, every = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local REFERENCE = 64 -- '@': an item key holding '@' and a response id points into a turn

-- The value of each item id (its JSON, '@' and a response id, or false) and, for the
-- turns those name, their record (`records`) or true (false for a turn that is gone).
-- With `keep`, every item and turn found lives at least `kept_ttl` and turns are kept.
local function gather(ids, keep, records)
  local values, held = {}, {}
  for _, id in ipairs(ids) do
    if values[id] == nil then
      local key = items .. id
      local value = redis.call('GET', key)
      values[id] = value
      if value and keep then
        extend(key, kept_ttl)
      end
      if value and string.byte(value, 1) == REFERENCE then
        local response_id = string.sub(value, 2)
        if held[response_id] == nil then
          local turn = turns .. response_id
          local found
          if records then
            found = redis.call('HGET', turn, 'record')
          else
            found = redis.call('EXISTS', turn) == 1
          end
          held[response_id] = found
          if found and keep then
            extend(turn, kept_ttl)
            redis.call('HSET', turn, 'kept', 1)
          end
        end
      end
    end
  end
  return values, held
end

-- The values of `ids` in order, and the records of the turns they point into as
-- response id, record pairs.
local function reply(ids, values, held)
  local found, records = {}, {}
  for i, id in ipairs(ids) do
    found[i] = values[id]
  end
  for response_id, record in pairs(held) do
    if record then
      records[#records + 1] = response_id
      records[#records + 1] = record
    end
  end
  return {found, records}
end

-- Whether a conversation exists; if it does and it has not refreshed what it names
-- for `every`, it does so now.
local function use(conversation, list)
  if redis.call('EXISTS', conversation) == 0 then
    return false
  end
  local now = now_ms()
  if now - tonumber(redis.call('HGET', conversation, 'refreshed') or '0') >= every then
    gather(redis.call('LRANGE', list, 0, -1), true, false)
    redis.call('HSET', conversation, 'refreshed', now)
  end
  return true
end

-- A conversation's TTL starts again (after any write: RPUSH makes a list with none).
local function slide(conversation, list)
  expire(conversation, talk_ttl)
  expire(list, talk_ttl)
end

local function push(list, values, first, last)
  for start = first, last, 1000 do
    redis.call('RPUSH', list, unpack(values, start, math.min(start + 999, last)))
  end
end

local function set(key, value, ttl)
  if ttl == 0 then
    redis.call('SET', key, value)
  else
    redis.call('SET', key, value, 'PX', ttl)
  end
end
"""
)

# KEYS[1]: the named turn. ARGV: turn key base, ttl (ms), max depth.
# Returns the records newest first, or nil if the turn is deleted or any link is missing.
GET_CHAIN = (
    _TTL
    + """
local base, ttl, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local head = redis.call('HMGET', KEYS[1], 'record', 'parent', 'deleted')
if not head[1] or head[3] then
  return false
end
local keys, records = {KEYS[1]}, {head[1]}
local parent = head[2]
while parent do
  if #keys > limit then
    return false
  end
  local key = base .. parent
  local fields = redis.call('HMGET', key, 'record', 'parent')
  if not fields[1] then
    return false
  end
  keys[#keys + 1] = key
  records[#records + 1] = fields[1]
  parent = fields[2]
end
for _, key in ipairs(keys) do
  extend(key, ttl)
end
return records
"""
)

# KEYS[1]: the new turn, then optionally the conversation and its list. ARGV[1..5]: as
# _ITEMS; then ttl (ms), record, parent id ('' if none), max depth, the turn's item ids.
# Stores the turn and points its item ids at it, counts it as a child of its parent
# (once) and refreshes the TTL of every ancestor still there. With a conversation that
# still exists, appends the item ids to it and keeps the turn as long as it.
PUT = (
    _ITEMS
    + """
local key, ttl, parent, limit = KEYS[1], tonumber(ARGV[6]), ARGV[8], tonumber(ARGV[9])
local talk = #KEYS == 3 and use(KEYS[2], KEYS[3])
local old = redis.call('HMGET', key, 'children', 'kept')
local children, kept = old[1], talk or old[2]
redis.call('DEL', key)
redis.call('HSET', key, 'record', ARGV[7], 'children', children or 0)
if parent ~= '' then
  redis.call('HSET', key, 'parent', parent)
end
local life = ttl
if kept then
  redis.call('HSET', key, 'kept', 1)
  life = kept_ttl
end
expire(key, life)
local reference = '@' .. string.sub(key, #turns + 1)
for i = 10, #ARGV do
  set(items .. ARGV[i], reference, life)
end
if talk then
  push(KEYS[3], ARGV, 10, #ARGV)
  slide(KEYS[2], KEYS[3])
end
local ancestor, depth = parent, 0
while ancestor and ancestor ~= '' and depth < limit do
  local ancestor_key = turns .. ancestor
  if not extend(ancestor_key, ttl) then
    break
  end
  if depth == 0 and not children then
    redis.call('HINCRBY', ancestor_key, 'children', 1)
  end
  ancestor = redis.call('HGET', ancestor_key, 'parent')
  depth = depth + 1
end
return 1
"""
)

# KEYS[1]: the turn to delete. ARGV: turn key base, max depth.
# Marks it deleted, then drops tombstones no stored turn and no conversation depends on,
# walking up. Returns the records dropped (their item ids are then forgotten), or nil if
# there was no such turn.
DELETE = """
local key, base, limit = KEYS[1], ARGV[1], tonumber(ARGV[2])
local found = redis.call('HMGET', key, 'record', 'deleted')
if not found[1] or found[2] then
  return false
end
redis.call('HSET', key, 'deleted', 1)
local dropped, depth = {}, 0
while depth < limit do
  local fields = redis.call('HMGET', key, 'parent', 'deleted', 'children', 'kept', 'record')
  if not fields[2] or tonumber(fields[3] or '0') > 0 or fields[4] then
    break
  end
  redis.call('DEL', key)
  dropped[#dropped + 1] = fields[5]
  if not fields[1] or redis.call('EXISTS', base .. fields[1]) == 0 then
    break
  end
  key = base .. fields[1]
  redis.call('HINCRBY', key, 'children', -1)
  depth = depth + 1
end
return dropped
"""

# ARGV: item key base, then for each dropped turn: its response id, how many item ids
# follow, the item ids. Deletes each item key that still points into that turn.
FORGET_ITEMS = """
local items, i = ARGV[1], 2
while i <= #ARGV do
  local reference, last = '@' .. ARGV[i], i + 1 + tonumber(ARGV[i + 1])
  for j = i + 2, last do
    local key = items .. ARGV[j]
    if redis.call('GET', key) == reference then
      redis.call('DEL', key)
    end
  end
  i = last + 1
end
return 1
"""

# ARGV[1..5]: as _ITEMS; then the item ids. Returns {values in order, turn records}.
GET_ITEMS = (
    _ITEMS
    + """
local ids = {}
for i = 6, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
local values, held = gather(ids, false, true)
return reply(ids, values, held)
"""
)

# KEYS: the conversation, its list. ARGV[1..5]: as _ITEMS. Returns nil if there is no
# such conversation, else {item ids, their values, turn records}; everything it names
# lives on.
CONVERSATION_ITEMS = (
    _ITEMS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
local values, held = gather(ids, true, true)
redis.call('HSET', KEYS[1], 'refreshed', now_ms())
slide(KEYS[1], KEYS[2])
local found = reply(ids, values, held)
return {ids, found[1], found[2]}
"""
)

# KEYS: the conversation, its list. ARGV[1..5]: as _ITEMS; then the new metadata, if
# any. Returns {created_at, metadata}, or nil if there is no such conversation.
CONVERSATION = (
    _ITEMS
    + """
if not use(KEYS[1], KEYS[2]) then
  return false
end
if ARGV[6] then
  redis.call('HSET', KEYS[1], 'metadata', ARGV[6])
end
slide(KEYS[1], KEYS[2])
return redis.call('HMGET', KEYS[1], 'created_at', 'metadata')
"""
)

# KEYS: the conversation, its list. ARGV[1..5]: as _ITEMS; then created_at and metadata
# to create the conversation ('' and '' to add to an existing one), n item ids, their n
# values (an item's JSON, or '' for an item already stored under that id). All or none:
# returns the first id not stored, 0 if there is no such conversation, else 1.
ADD_ITEMS = (
    _ITEMS
    + """
local create = ARGV[6] ~= ''
if not create and not use(KEYS[1], KEYS[2]) then
  return 0
end
local count = (#ARGV - 7) / 2
local attached = {}
for i = 1, count do
  if ARGV[7 + count + i] == '' then
    attached[#attached + 1] = ARGV[7 + i]
  end
end
local values, held = gather(attached, false, false)
for _, id in ipairs(attached) do
  local value = values[id]
  if not value or (string.byte(value, 1) == REFERENCE and not held[string.sub(value, 2)]) then
    return id
  end
end
if create then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'created_at', ARGV[6], 'metadata', ARGV[7], 'refreshed', now_ms())
end
for i = 1, count do
  local value = ARGV[7 + count + i]
  if value ~= '' then
    set(items .. ARGV[7 + i], value, kept_ttl)
  end
end
gather(attached, true, false)
push(KEYS[2], ARGV, 8, 7 + count)
slide(KEYS[1], KEYS[2])
return 1
"""
)

# KEYS: the conversation, its list. ARGV[1..5]: as _ITEMS; then the item id. Takes its
# first occurrence out of the list; returns how many were taken (0 or 1).
REMOVE_ITEM = (
    _ITEMS
    + """
if not use(KEYS[1], KEYS[2]) then
  return 0
end
local removed = redis.call('LREM', KEYS[2], 1, ARGV[6])
slide(KEYS[1], KEYS[2])
return removed
"""
)

# KEYS[1]: the lock. ARGV: token, lease (ms). Takes it if free, or renews it if the
# token holds it; returns 1 if it got it.
LOCK = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1]: the lock. ARGV: token. Releases it only if the token still holds it.
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"""

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
