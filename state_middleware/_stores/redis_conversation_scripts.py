"""The Lua scripts behind ``RedisStore``'s items, conversations and conversation locks:
each walks a conversation's item list (and the turns its items point into) inside
Redis, so a conversation of any length costs one round trip, and each runs atomically,
so nothing half written is ever read back. Each script is preceded by its ``KEYS`` and
``ARGV``.
"""

from .redis_lua import ITEM_HELPERS

__all__ = [
    "ADD_ITEMS",
    "CONVERSATION",
    "CONVERSATION_ITEMS",
    "GET_ITEMS",
    "LOCK",
    "REMOVE_ITEM",
    "UNLOCK",
]

# ARGV[1..5]: as ITEM_HELPERS; then the item ids. Returns {values in order, turn
# records}.
GET_ITEMS = (
    ITEM_HELPERS
    + """
local ids = {}
for i = 6, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
local values, held = gather(ids, false, true)
return reply(ids, values, held)
"""
)

# KEYS: the conversation, its list. ARGV[1..5]: as ITEM_HELPERS. Returns nil if there
# is no such conversation, else {item ids, their values, turn records}; everything it
# names lives on.
CONVERSATION_ITEMS = (
    ITEM_HELPERS
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

# KEYS: the conversation, its list. ARGV[1..5]: as ITEM_HELPERS; then the new metadata,
# if any. Returns {created_at, metadata}, or nil if there is no such conversation.
CONVERSATION = (
    ITEM_HELPERS
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

# KEYS: the conversation, its list. ARGV[1..5]: as ITEM_HELPERS; then created_at and
# metadata to create the conversation ('' and '' to add to an existing one), n item ids,
# their n values (an item's JSON, or '' for an item already stored under that id). All
# or none: returns the first id not stored, 0 if there is no such conversation, else 1.
ADD_ITEMS = (
    ITEM_HELPERS
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

# KEYS: the conversation, its list. ARGV[1..5]: as ITEM_HELPERS; then the item id. Takes
# its first occurrence out of the list; returns how many were taken (0 or 1).
REMOVE_ITEM = (
    ITEM_HELPERS
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
