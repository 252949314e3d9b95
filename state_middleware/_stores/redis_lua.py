"""Lua helpers that ``RedisStore``'s scripts begin with (each script is its helpers and
its body, sent as one text, so a helper costs no round trip).

TTLs are in milliseconds; a TTL of 0 means "never expires". A script touches only the
keys it is given in ``KEYS``, all in one Redis Cluster slot (they share a hash tag).
``TTL_HELPERS`` serve every script that sets a TTL; ``ITEM_HELPERS`` the conversation
scripts (``redis_conversation_scripts.py``), whose ``KEYS`` are a conversation's tree
hash, its hash and its list of item ids.
"""

__all__ = ["ITEM_HELPERS", "TTL_HELPERS"]

# Helpers for every script that sets a TTL.
TTL_HELPERS = """
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

# Helpers for the conversation scripts. ARGV[1..3]: the conversation ttl, the ttl of what
# a conversation names ("kept": its tree hash and the pointer keys of its items) and how
# often a conversation in use refreshes those pointer keys (as ``_conversation_ttls``).
ITEM_HELPERS = (
    TTL_HELPERS
    + """
local talk_ttl, kept_ttl, every = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local REFERENCE = 64 -- '@': a value holding '@' and a response id names that turn's item

-- The response an id of derived_item_id's form points into ('resp_' and the part
-- between the prefix and the position), or nil.
local function derived(id)
  local middle = string.match(id, '^%l+_(%w+)_%d+$')
  if middle and #id <= 256 and not string.find(middle, '_', 1, true) then
    return 'resp_' .. middle
  end
  return nil
end

-- Whether the pointer keys of what a conversation names are due for a refresh (the
-- last one is `every` old); if so, the refresh counts as done now.
local function refresh_due(conversation)
  if kept_ttl == 0 then
    return false -- they never expire
  end
  local now = now_ms()
  if now - tonumber(redis.call('HGET', conversation, 'refreshed') or '0') < every then
    return false
  end
  redis.call('HSET', conversation, 'refreshed', now)
  return true
end

-- The ids the list names that have a pointer key (an `i:` field in the tree), once
-- each, if their refresh is due; else none.
local function due(tree, conversation, list)
  local ids, seen = {}, {}
  if not refresh_due(conversation) then
    return ids
  end
  for _, id in ipairs(redis.call('LRANGE', list, 0, -1)) do
    if not seen[id] and redis.call('HEXISTS', tree, 'i:' .. id) == 1 then
      ids[#ids + 1] = id
    end
    seen[id] = true
  end
  return ids
end

-- After a use: the tree lives at least `kept_ttl` more (`fresh`: this script made it,
-- so it has no TTL yet), the conversation and its list `talk_ttl` from now (RPUSH makes
-- a list without one).
local function live(tree, conversation, list, fresh)
  if fresh then
    expire(tree, kept_ttl)
  else
    extend(tree, kept_ttl)
  end
  expire(conversation, talk_ttl)
  expire(list, talk_ttl)
end

local function push(list, values, first, last)
  for start = first, last, 1000 do
    redis.call('RPUSH', list, unpack(values, start, math.min(start + 999, last)))
  end
end
"""
)
