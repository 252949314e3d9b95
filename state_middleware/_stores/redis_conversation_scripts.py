"""The Lua scripts behind ``RedisStore``'s items, conversations and conversation locks.

A conversation script touches the conversation's three keys only (its tree hash, its
hash and its list of item ids, one slot): it walks the list inside Redis, so a
conversation of any length costs one round trip, and runs atomically, so nothing half
written is ever read back. ``READ_FIELDS`` reads one tree and ``RETIME`` one pointer
key; ``LOCK`` and ``UNLOCK`` one lock. Each script is preceded by its ``KEYS`` and
``ARGV``; the conversation scripts take ``ITEM_HELPERS``' ``ARGV`` first.
"""

from .redis_lua import ITEM_HELPERS

__all__ = [
    "ADD_ITEMS",
    "CONVERSATION",
    "CONVERSATION_ITEMS",
    "DELETE_CONVERSATION",
    "LOCK",
    "READ_FIELDS",
    "REMOVE_ITEM",
    "RETIME",
    "UNLOCK",
]

# KEYS[1]: a tree. ARGV: fields of it (`r:` records, `i:` items). Returns each field and
# its value (nil if none) in turn; an `i:` value naming a turn of the tree ('@' and its
# id) is followed by that turn's `r:` field and record.
READ_FIELDS = """
local found = {}
for _, field in ipairs(ARGV) do
  local value = redis.call('HGET', KEYS[1], field)
  found[#found + 1] = field
  found[#found + 1] = value
  if value and string.sub(field, 1, 2) == 'i:' and string.byte(value, 1) == 64 then
    local turn = 'r:' .. string.sub(value, 2)
    found[#found + 1] = turn
    found[#found + 1] = redis.call('HGET', KEYS[1], turn)
  end
end
return found
"""

# KEYS: the tree, the conversation, its list. ARGV[1..3]: as ITEM_HELPERS. Returns nil
# if there is no such conversation, else {item ids, the value of each (its JSON, '@' and
# the response id whose record holds it, or nil), the `r:` fields and records of those
# turns, the ids whose pointer keys are due for a refresh}.
CONVERSATION_ITEMS = (
    ITEM_HELPERS
    + """
local tree, conversation, list = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', conversation) == 0 then
  return false
end
local ids = redis.call('LRANGE', list, 0, -1)
local values, records, named, seen, read = {}, {}, {}, {}, {}
for i, id in ipairs(ids) do
  local value = redis.call('HGET', tree, 'i:' .. id)
  if not value then
    local response_id = derived(id)
    value = response_id and '@' .. response_id
  elseif not seen[id] then
    named[#named + 1] = id
  end
  seen[id] = true
  values[i] = value or false
  if value and string.byte(value, 1) == REFERENCE and not read[value] then
    local field = 'r:' .. string.sub(value, 2)
    read[value] = true
    records[#records + 1] = field
    records[#records + 1] = redis.call('HGET', tree, field)
  end
end
if not refresh_due(conversation) then
  named = {}
end
live(tree, conversation, list, false)
return {ids, values, records, named}
"""
)

# KEYS: the tree, the conversation, its list. ARGV[1..3]: as ITEM_HELPERS; then the new
# metadata, if any. Returns nil if there is no such conversation, else {created_at,
# metadata, the ids whose pointer keys are due for a refresh}.
CONVERSATION = (
    ITEM_HELPERS
    + """
local tree, conversation, list = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', conversation) == 0 then
  return false
end
if ARGV[4] then
  redis.call('HSET', conversation, 'metadata', ARGV[4])
end
local refresh = due(tree, conversation, list)
live(tree, conversation, list, false)
local found = redis.call('HMGET', conversation, 'created_at', 'metadata')
return {found[1], found[2], refresh}
"""
)

# KEYS: the tree, the conversation, its list. ARGV[1..3]: as ITEM_HELPERS; then
# created_at and metadata to create the conversation ('' and '' to add to an existing
# one), an id to attach that is not stored ('' if none), n item ids, their n JSON values.
# All or none: returns nil if there is no such conversation to add to, the id not stored
# if any (nothing written), else the ids whose pointer keys are due for a refresh.
ADD_ITEMS = (
    ITEM_HELPERS
    + """
local tree, conversation, list = KEYS[1], KEYS[2], KEYS[3]
local create = ARGV[4] ~= ''
if not create and redis.call('EXISTS', conversation) == 0 then
  return false
end
if ARGV[6] ~= '' then
  return ARGV[6]
end
local refresh = {}
if create then
  redis.call('DEL', conversation, list)
  local now = now_ms()
  redis.call('HSET', conversation, 'created_at', ARGV[4], 'metadata', ARGV[5], 'refreshed', now)
else
  refresh = due(tree, conversation, list)
end
local fresh = redis.call('EXISTS', tree) == 0
local count = (#ARGV - 6) / 2
for i = 1, count do
  redis.call('HSET', tree, 'i:' .. ARGV[6 + i], ARGV[6 + count + i])
end
push(list, ARGV, 7, 6 + count)
live(tree, conversation, list, fresh)
return refresh
"""
)

# KEYS: the tree, the conversation, its list. ARGV[1..3]: as ITEM_HELPERS; then the item
# id. Takes its first occurrence out of the list (its `i:` field stays: the item is
# still found by id). Returns nil if there is no such conversation, else {how many were
# taken (0 or 1), the ids whose pointer keys are due for a refresh}.
REMOVE_ITEM = (
    ITEM_HELPERS
    + """
local tree, conversation, list = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', conversation) == 0 then
  return false
end
local removed = redis.call('LREM', list, 1, ARGV[4])
local refresh = due(tree, conversation, list)
live(tree, conversation, list, false)
return {removed, refresh}
"""
)

# KEYS: the tree, the conversation, its list. ARGV: ttl (ms). Deletes the conversation
# and its list; a tree that never expires (what a conversation without a TTL names)
# gets the ttl. Returns nil if there was no such conversation, else, for that last case,
# each id with an `i:` field and '@' and a response id (its item is in that turn) or '^'
# (its JSON is): the pointer keys to give the ttl too.
DELETE_CONVERSATION = """
local tree, conversation, list = KEYS[1], KEYS[2], KEYS[3]
if redis.call('DEL', conversation) == 0 then
  return false
end
redis.call('DEL', list)
local named = {}
if redis.call('PTTL', tree) ~= -1 then
  return named
end
redis.call('PEXPIRE', tree, ARGV[1])
for _, field in ipairs(redis.call('HKEYS', tree)) do
  if string.sub(field, 1, 2) == 'i:' then
    local value = redis.call('HGET', tree, field)
    named[#named + 1] = string.sub(field, 3)
    named[#named + 1] = string.byte(value, 1) == 64 and value or '^'
  end
end
return named
"""

# KEYS[1]: a pointer key. ARGV: the value it must still hold, its new ttl (ms).
RETIME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""

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
