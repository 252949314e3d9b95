"""The Lua scripts behind ``RedisStore``: each walks parent links inside Redis, so a
chain of any length costs one round trip, and each runs atomically, so nothing half
written is ever read back.
"""

__all__ = ["DELETE", "GET_CHAIN", "PUT"]

# KEYS[1]: the named turn. ARGV: turn key base, ttl (ms), max depth.
# Returns the records newest first, or nil if the turn is deleted or any link is missing.
GET_CHAIN = """
local base, ttl, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
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
  redis.call('PEXPIRE', key, ttl)
end
return records
"""

# KEYS[1]: the new turn. ARGV: turn key base, ttl (ms), record, parent id ('' if none),
# max depth. Stores the turn, counts it as a child of its parent (once) and refreshes
# the TTL of every ancestor still there.
PUT = """
local key, base, ttl, parent, limit = KEYS[1], ARGV[1], ARGV[2], ARGV[4], tonumber(ARGV[5])
local children = redis.call('HGET', KEYS[1], 'children')
redis.call('DEL', key)
if parent == '' then
  redis.call('HSET', key, 'record', ARGV[3], 'children', children or 0)
else
  redis.call('HSET', key, 'record', ARGV[3], 'children', children or 0, 'parent', parent)
end
redis.call('PEXPIRE', key, ttl)
local ancestor, depth = parent, 0
while ancestor and ancestor ~= '' and depth < limit do
  local ancestor_key = base .. ancestor
  if redis.call('PEXPIRE', ancestor_key, ttl) == 0 then
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

# KEYS[1]: the turn to delete. ARGV: turn key base, max depth.
# Marks it deleted, then drops tombstones no stored turn depends on, walking up.
DELETE = """
local key, base, limit = KEYS[1], ARGV[1], tonumber(ARGV[2])
local found = redis.call('HMGET', key, 'record', 'deleted')
if not found[1] or found[2] then
  return 0
end
redis.call('HSET', key, 'deleted', 1)
local depth = 0
while depth < limit do
  local fields = redis.call('HMGET', key, 'parent', 'deleted', 'children')
  if not fields[2] or tonumber(fields[3] or '0') > 0 then
    break
  end
  redis.call('DEL', key)
  if not fields[1] or redis.call('EXISTS', base .. fields[1]) == 0 then
    break
  end
  key = base .. fields[1]
  redis.call('HINCRBY', key, 'children', -1)
  depth = depth + 1
end
return 1
"""
