"""Lua helpers that ``RedisStore``'s scripts begin with (each script is its helpers and
its body, sent as one text, so a helper costs no round trip).

TTLs are in milliseconds; a TTL of 0 means "never expires". Keys a script builds itself
come from the bases it is given (``turns``, ``items``): every key of one owner.
``ITEM_HELPERS`` serve the conversation scripts and ``PUT`` (which appends a turn's
items to a conversation); ``TTL_HELPERS`` every script that sets a TTL.
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

# Helpers for scripts about items and conversations. ARGV[1..5]: item key base, turn
# key base, conversation ttl, ttl of what a conversation names ("kept"), how often a
# conversation in use refreshes what it names.
ITEM_HELPERS = (
    TTL_HELPERS
    + """
local items, turns = ARGV[1], ARGV[2]
local talk_ttl, kept_ttl, every = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local REFERENCE = 64 -- '@': an item key holding '@' and a response id points into a turn

-- The response an id of derived_item_id's form points into ('resp_' and the part
-- between the prefix and the position), or nil: such ids have no item key.
local function derived(id)
  local middle = string.match(id, '^%l+_(%w+)_%d+$')
  if middle and #id <= 256 and not string.find(middle, '_', 1, true) then
    return 'resp_' .. middle
  end
  return nil
end

-- The value of each item id (its JSON, '@' and a response id, or false) and, for the
-- turns those name, their record (`records`) or true (false for a turn that is gone).
-- With `keep`, every item and turn found lives at least `kept_ttl` and turns are kept.
local function gather(ids, keep, records)
  local values, held = {}, {}
  for _, id in ipairs(ids) do
    if values[id] == nil then
      local key = items .. id
      local value = redis.call('GET', key)
      if not value then
        local response_id = derived(id)
        if response_id then
          value = '@' .. response_id
        end
      end
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
