"""The Lua scripts behind ``RedisStore``'s turns: ``get_chain`` and ``put`` walk parent
links inside Redis, so a chain of any length costs one round trip, and ``delete`` drops
the tombstones nothing depends on any more. Each runs atomically, so nothing half
written is ever read back. Each script is preceded by its ``KEYS`` and ``ARGV``.
"""

from .redis_lua import ITEM_HELPERS, TTL_HELPERS

__all__ = ["DELETE", "FORGET_ITEMS", "GET_CHAIN", "PUT"]

# KEYS[1]: the named turn. ARGV: turn key base, ttl (ms), max depth.
# Returns the records newest first, or nil if the turn is deleted or any link is missing.
GET_CHAIN = (
    TTL_HELPERS
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
# ITEM_HELPERS; then ttl (ms), record, parent id ('' if none), max depth, the turn's item
# ids.
# Stores the turn and points its item ids at it, counts it as a child of its parent
# (once) and refreshes the TTL of every ancestor still there. With a conversation that
# still exists, appends the item ids to it and keeps the turn as long as it.
PUT = (
    ITEM_HELPERS
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
local response_id = string.sub(key, #turns + 1)
local reference = '@' .. response_id
for i = 10, #ARGV do
  if derived(ARGV[i]) ~= response_id then -- a derived id says where its item is
    set(items .. ARGV[i], reference, life)
  end
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
