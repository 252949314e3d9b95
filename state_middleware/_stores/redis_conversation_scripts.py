"""The Lua scripts behind ``RedisStore``'s items, conversations and conversation locks.

A conversation script touches the conversation's three keys only (its tree hash, its
hash and its list of item ids, one slot): it walks the list inside Redis, so a
conversation of any length costs one round trip, and runs atomically, so nothing half
written is ever read back. ``CONVERSATION_ITEMS`` walks only the part of the list its
caller does not hold yet, when the conversation's mark says that what it holds is still
so (see ``redis_conversation_cache.py``). ``READ_FIELDS`` reads one tree and ``RETIME``
one pointer key; ``LOCK`` and ``UNLOCK`` one lock. Each script is preceded by its
``KEYS`` and ``ARGV``; the conversation scripts take ``ITEM_HELPERS``' ``ARGV`` first.
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

# KEYS: the tree, the conversation, its list. ARGV[1..3]: as ITEM_HELPERS; then the
# conversation id, a fresh mark (set if the conversation has none and is read whole),
# then what the caller holds: the mark it read it under ('' for nothing), how many items
# it holds (at least one) and the id of the last.
# Returns nil if there is no such conversation, else {its mark (nil: hold nothing), the
# position the ids start at (0: all of them; else how many the caller holds), those
# item ids, the value of each (its JSON, '@' and the response id whose record holds it,
# or nil), the `r:` fields and records of those turns, the ids whose pointer keys are
# due for a refresh}.
# The mark (the tree's field `g:` and the conversation id) is taken out by anything
# that is not an append: then nobody trusts what it holds. Here too, when the list does
# not go on from what the caller holds under it (a write lost in a failover, a list lost
# on its own, an item removed by an older version), or when an item is missing.
CONVERSATION_ITEMS = (
    ITEM_HELPERS
    + """
local tree, conversation, list = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', conversation) == 0 then
  return false
end
local field, held = 'g:' .. ARGV[4], tonumber(ARGV[7])
local mark = redis.call('HGET', tree, field)
local start, ids = 0, nil
if mark and mark == ARGV[6] then
  -- indexed from the end, so that no server version walks there from the head
  local past = redis.call('LLEN', list) - held
  ids = past >= 0 and redis.call('LRANGE', list, -past - 1, -1) or {}
  if ids[1] == ARGV[8] then
    table.remove(ids, 1)
    start = held
  else
    redis.call('HDEL', tree, field)
    mark = false
  end
end
if start == 0 then
  ids = redis.call('LRANGE', list, 0, -1)
end
local values, records, named, seen, read = {}, {}, {}, {}, {}
local whole = true
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
  whole = whole and value and true
  if value and string.byte(value, 1) == REFERENCE and not read[value] then
    local turn = 'r:' .. string.sub(value, 2)
    local record = redis.call('HGET', tree, turn)
    read[value] = true
    records[#records + 1] = turn
    records[#records + 1] = record
    whole = whole and record and true
  end
end
if not whole or (start == 0 and #ids == 0) then
  if mark then
    redis.call('HDEL', tree, field)
  end
  mark = false
elseif not mark then
  mark = ARGV[5]
  redis.call('HSET', tree, field, mark)
end
local refresh = {}
if start > 0 then
  refresh = due(tree, conversation, list)
elseif refresh_due(conversation) then
  refresh = named
end
live(tree, conversation, list, false)
return {mark, start, ids, values, records, refresh}
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
# one), an id to attach that is not stored ('' if none), the conversation id, n item
# ids, their n JSON values. All or none: returns nil if there is no such conversation to
# add to, the id not stored if any (nothing written), else the ids whose pointer keys
# are due for a refresh. Creating takes the conversation's mark out (see
# CONVERSATION_ITEMS); adding is an append, which leaves it.
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
  redis.call('HDEL', tree, 'g:' .. ARGV[7])
  local now = now_ms()
  redis.call('HSET', conversation, 'created_at', ARGV[4], 'metadata', ARGV[5], 'refreshed', now)
else
  refresh = due(tree, conversation, list)
end
local fresh = redis.call('EXISTS', tree) == 0
local count = (#ARGV - 7) / 2
for i = 1, count do
  redis.call('HSET', tree, 'i:' .. ARGV[7 + i], ARGV[7 + count + i])
end
push(list, ARGV, 8, 7 + count)
live(tree, conversation, list, fresh)
return refresh
"""
)

# KEYS: the tree, the conversation, its list. ARGV[1..3]: as ITEM_HELPERS; then the item
# id and the conversation id. Takes the item's first occurrence out of the list (its
# `i:` field stays: the item is still found by id), and with it the conversation's mark
# (see CONVERSATION_ITEMS). Returns nil if there is no such conversation, else {how many
# were taken (0 or 1), the ids whose pointer keys are due for a refresh}.
REMOVE_ITEM = (
    ITEM_HELPERS
    + """
local tree, conversation, list = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', conversation) == 0 then
  return false
end
local removed = redis.call('LREM', list, 1, ARGV[4])
if removed > 0 then
  redis.call('HDEL', tree, 'g:' .. ARGV[5])
end
local refresh = due(tree, conversation, list)
live(tree, conversation, list, false)
return {removed, refresh}
"""
)

# KEYS: the tree, the conversation, its list. ARGV: ttl (ms), the conversation id.
# Deletes the conversation, its list and its mark (see CONVERSATION_ITEMS); a tree that
# never expires (what a conversation without a TTL names) gets the ttl. Returns nil if
# there was no such conversation, else, for that last case, each id with an `i:` field
# and '@' and a response id (its item is in that turn) or '^' (its JSON is): the pointer
# keys to give the ttl too.
DELETE_CONVERSATION = """
local tree, conversation, list = KEYS[1], KEYS[2], KEYS[3]
if redis.call('DEL', conversation) == 0 then
  return false
end
redis.call('DEL', list)
redis.call('HDEL', tree, 'g:' .. ARGV[2])
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
