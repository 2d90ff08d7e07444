"""The vector store's Lua scripts: each runs atomically on the one node of its arm's slot."""

__all__ = ["FLIP", "ROLLBACK"]

# KEYS: current, versions, pinned, layers. ARGV: version, retention, key base, parent ('' =
# a full version). Every key touched shares the arm's hash tag: one Cluster slot.
FLIP = """
if redis.call('EXISTS', KEYS[3]) == 1 then return redis.error_reply('PINNED') end
if ARGV[4] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[4] then
  return redis.error_reply('STALE')
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('LREM', KEYS[2], 0, ARGV[1])  -- a version published again is listed once
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
local dropped = redis.call('LRANGE', KEYS[2], tonumber(ARGV[2]), -1)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
local keep = {}
for _, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  keep[v] = true
  local bl = redis.call('HGET', ARGV[3] .. 'meta:' .. v, 'base_layers')
  if bl then for w in string.gmatch(bl, '[^,]+') do keep[w] = true end end
end
for _, v in ipairs(dropped) do redis.call('SADD', KEYS[4], v) end
for _, v in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  if not keep[v] then
    redis.call('UNLINK', ARGV[3] .. 'vec:' .. v, ARGV[3] .. 'meta:' .. v)
    redis.call('SREM', KEYS[4], v)
  end
end
return 1
"""

ROLLBACK = """
local cur = redis.call('GET', KEYS[1])
if not cur then return redis.error_reply('NO_VERSION') end
local vs = redis.call('LRANGE', KEYS[2], 0, -1)
local idx = nil
for i, v in ipairs(vs) do if v == cur then idx = i end end
if (not idx) or idx >= #vs then return redis.error_reply('NO_OLDER') end
local target = vs[idx + 1]
redis.call('SET', KEYS[1], target)
redis.call('SET', KEYS[3], target)
return target
"""
