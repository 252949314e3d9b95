"""The Lua scripts behind ``RedisStore``'s turns. Each touches one key, the hash of one
tree (and, for a turn of a conversation, that conversation's two keys, in the same
slot), so they run as they are on Redis Cluster; each runs atomically, so nothing half
written is ever read back. Each script is preceded by its ``KEYS`` and ``ARGV``.

A tree's fields are named ``{kind}:{id}`` (see ``redis.py``). Nothing here walks a
chain but ``GET_CHAIN``, and only over the records its caller does not have yet.
"""

from .redis_lua import TTL_HELPERS

__all__ = ["DELETE", "FORGET_ITEM", "GET_CHAIN", "PUT"]

# KEYS[1]: the tree. ARGV: the head id, ttl (ms), the first id whose record the caller
# lacks ('' if it has them all), max depth, then ids the caller has (it stops there).
# Nil if the head is missing, deleted or an orphan, or a record on the way is missing;
# else the records from that first id up to a known id or the root, newest first. The
# tree lives at least ttl more.
GET_CHAIN = (
    TTL_HELPERS
    + """
local tree, head, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])
local from, limit = ARGV[3], tonumber(ARGV[4])
local state = redis.call('HMGET', tree, 'c:' .. head, 'd:' .. head, 'o:' .. head)
if not state[1] or state[2] or state[3] then
  return false
end
local known = {}
for i = 5, #ARGV do
  known[ARGV[i]] = true
end
local records, id = {}, from
while id and id ~= '' and not known[id] do
  if #records >= limit then
    return false
  end
  local fields = redis.call('HMGET', tree, 'r:' .. id, 'p:' .. id)
  if not fields[1] then
    return false
  end
  records[#records + 1] = fields[1]
  id = fields[2]
end
extend(tree, ttl)
return records
"""
)

# KEYS[1]: the tree, then optionally the conversation and its list. ARGV: ttl,
# conversation ttl, kept ttl (ms; 0: never expires), the id, the record, the parent id
# ('' if none), how many item ids follow, the item ids (input then output), then the
# ones not derived from this turn's id.
# Stores the turn (a turn stored again keeps its children and stays a child once),
# counts it as a child of its parent, or marks it an orphan if the parent is gone.
# With a conversation that still exists, the conversation names its items (an `i:`
# field each, but for derived ids) and lists them, the turn is kept, and the tree
# lives as long as what a conversation names. Returns 1 if it joined a conversation.
PUT = (
    TTL_HELPERS
    + """
local tree, ttl = KEYS[1], tonumber(ARGV[1])
local talk_ttl, kept_ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local id, parent, count = ARGV[4], ARGV[6], tonumber(ARGV[7])
local talk = #KEYS == 3 and redis.call('EXISTS', KEYS[2]) == 1
local fresh = redis.call('EXISTS', tree) == 0
if redis.call('HEXISTS', tree, 'c:' .. id) == 1 then
  redis.call('HDEL', tree, 'd:' .. id)
else
  redis.call('HSET', tree, 'c:' .. id, 0)
  if parent ~= '' then
    redis.call('HSET', tree, 'p:' .. id, parent)
    if redis.call('HEXISTS', tree, 'c:' .. parent) == 1 then
      redis.call('HINCRBY', tree, 'c:' .. parent, 1)
    else
      redis.call('HSET', tree, 'o:' .. id, 1)
    end
  end
end
redis.call('HSET', tree, 'r:' .. id, ARGV[5])
local life = ttl
if talk then
  local reference = '@' .. id
  redis.call('HSET', tree, 'k:' .. id, 1)
  for i = 8 + count, #ARGV do
    redis.call('HSET', tree, 'i:' .. ARGV[i], reference)
  end
  for start = 8, 7 + count, 1000 do
    redis.call('RPUSH', KEYS[3], unpack(ARGV, start, math.min(start + 999, 7 + count)))
  end
  expire(KEYS[2], talk_ttl)
  expire(KEYS[3], talk_ttl)
end
if talk or redis.call('HEXISTS', tree, 'k:' .. id) == 1 then
  life = kept_ttl
end
if fresh then
  expire(tree, life)
else
  extend(tree, life)
end
return talk and 1 or 0
"""
)

# KEYS[1]: the tree. ARGV: the id, max depth.
# Marks the turn deleted, then drops the deleted turns nothing depends on (no stored
# child, no conversation), walking up. Returns the records dropped (their item ids are
# then forgotten), or nil if there was no such turn.
DELETE = """
local tree, id, limit = KEYS[1], ARGV[1], tonumber(ARGV[2])
local found = redis.call('HMGET', tree, 'c:' .. id, 'd:' .. id)
if not found[1] or found[2] then
  return false
end
redis.call('HSET', tree, 'd:' .. id, 1)
local dropped = {}
while id and #dropped < limit do
  local f = redis.call('HMGET', tree, 'p:' .. id, 'd:' .. id, 'c:' .. id, 'k:' .. id, 'r:' .. id)
  if not f[2] or tonumber(f[3] or '0') > 0 or f[4] then
    break
  end
  redis.call('HDEL', tree, 'r:' .. id, 'p:' .. id, 'c:' .. id, 'd:' .. id, 'o:' .. id)
  dropped[#dropped + 1] = f[5]
  id = f[1]
  if id and redis.call('HEXISTS', tree, 'c:' .. id) == 1 then
    redis.call('HINCRBY', tree, 'c:' .. id, -1)
  else
    id = nil
  end
end
return dropped
"""

# KEYS[1]: an item key. ARGV[1]: what it must still hold to be deleted ('@' and the
# response id of a dropped turn).
FORGET_ITEM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"""
