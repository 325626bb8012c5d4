-- Settles one request: token reservations to the tokens used, concurrency
-- slots released, budget reservations to the actual cost. The same script
-- releases a request that never ran (actual cost 0, tokens kept) and
-- replays spend charged while Redis was away (no reservation).
--
-- KEYS: per rule (2): tokens hash, concurrency zset;
--       per budget (2): budget hash, reservations zset;
--       per attribution (1): the day's spend hash of a dimension;
--       last: live zset.
-- ARGV: id, booked_second, rules, budgets, reserved_tokens, actual_tokens,
--       expires_ms (when the take's reservations expire),
--       per rule (2): has_tpm (1|0), has_concurrency (1|0),
--       per budget (4): window, reserved amount, actual cost, key_ttl_s,
--       attributions, cost, per attribution (1): the identity's value.
-- Reply: {0} already settled (a retry whose first try went through), or
--        {1, per budget: spend before, spend after, reserved after}.
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now_ms = sec * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local booked = tonumber(ARGV[2])
local nr = tonumber(ARGV[3])
local nb = tonumber(ARGV[4])
local reserved = tonumber(ARGV[5])
local actual = tonumber(ARGV[6])
local SPAN = 61
-- Identities a day's spend hash names at most; later ones share a field.
local MAX_ATTRIBUTED = 100000
local KEEP_ATTRIBUTION = 8 * 24 * 3600

-- A request settles once: its live entry goes with the first settlement.
-- Missing before its expiry means this is a retry of one that went through.
if redis.call('ZREM', KEYS[#KEYS], id) == 0 and tonumber(ARGV[7]) > now_ms then
  return { 0 }
end

for i = 1, nr do
  local k, a = (i - 1) * 2, 8 + (i - 1) * 2
  if ARGV[a] == '1' then
    if sec - booked < SPAN and redis.call('HEXISTS', KEYS[k + 1], booked) == 1 then
      redis.call('HINCRBY', KEYS[k + 1], booked, actual - reserved)
    elseif actual > 0 then
      -- The reservation left the window: what was used is charged now.
      redis.call('HINCRBY', KEYS[k + 1], sec, ARGV[6])
      redis.call('PEXPIRE', KEYS[k + 1], (SPAN + 1) * 1000)
    end
  end
  if ARGV[a + 1] == '1' then
    redis.call('ZREM', KEYS[k + 2], id)
  end
end

local out = { 1 }
local kb, ab = nr * 2, 8 + nr * 2
for j = 1, nb do
  local bkey, rkey = KEYS[kb + (j - 1) * 2 + 1], KEYS[kb + (j - 1) * 2 + 2]
  local a = ab + (j - 1) * 4
  -- Gone already when it expired (and was released by a later take).
  if redis.call('ZREM', rkey, id .. ':' .. ARGV[a + 1]) == 1 and ARGV[a + 1] ~= '0' then
    redis.call('HINCRBY', bkey, 'r', '-' .. ARGV[a + 1])
  end
  if redis.call('HGET', bkey, 'w') ~= ARGV[a] then
    redis.call('HSET', bkey, 'w', ARGV[a], 's', '0')
  end
  local before = tonumber(redis.call('HGET', bkey, 's')) or 0
  local after = redis.call('HINCRBY', bkey, 's', ARGV[a + 2])
  local reserved = tonumber(redis.call('HGET', bkey, 'r')) or 0
  local keep = tonumber(ARGV[a + 3])
  if keep > 0 then
    redis.call('EXPIRE', bkey, keep)
  end
  out[#out + 1] = before
  out[#out + 1] = after
  out[#out + 1] = reserved
end

local aa = ab + nb * 4
local na = tonumber(ARGV[aa]) or 0
if na > 0 and ARGV[aa + 1] ~= '0' then
  for x = 1, na do
    local key, field = KEYS[kb + nb * 2 + x], ARGV[aa + 1 + x]
    if redis.call('HEXISTS', key, field) == 0 and redis.call('HLEN', key) >= MAX_ATTRIBUTED then
      field = '~overflow'
    end
    redis.call('HINCRBY', key, field, ARGV[aa + 1])
    redis.call('EXPIRE', key, KEEP_ATTRIBUTION)
  end
end
return out
