-- Fleet state: every decision Sluice replicas share, made atomically in
-- Redis. One script, two operations (ARGV[1]: take | settle), so both use
-- the same helpers; the layout of KEYS and ARGV is built in
-- src/fleet/script.rs, and each operation's is written above it below (with
-- ARGV counted after the operation's name).
local op = table.remove(ARGV, 1)
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now_ms = sec * 1000 + math.floor(tonumber(t[2]) / 1000)
-- A use booked in second s counts until second s + SPAN begins: at least
-- 60 s, so no 60-second window ever holds more than the limit.
local SPAN = 61
-- Identities a day's spend hash names at most; later ones share a field.
local MAX_ATTRIBUTED = 100000
local KEEP_ATTRIBUTION = 8 * 24 * 3600

-- A rate window is a hash: one field per second with use, 't' their
-- total, 'o' and 'n' the oldest and newest second held. `window` drops the
-- seconds that left the window and returns the total. Every write evicts
-- first, so the seconds to look at are at most SPAN, and usually none.
local function window(key)
  local v = redis.call('HMGET', key, 't', 'o', 'n')
  local total, oldest, newest = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
  if not total then
    return 0
  end
  local last = sec - SPAN
  if newest <= last then
    redis.call('DEL', key)
    return 0
  end
  if oldest <= last then
    for s = oldest, last do
      local n = redis.call('HGET', key, s)
      if n then
        total = total - tonumber(n)
        redis.call('HDEL', key, s)
      end
    end
    redis.call('HSET', key, 't', total, 'o', last + 1)
  end
  return total
end

-- Adds `amount` in second `s` (the current one) of a window.
local function add(key, s, amount)
  redis.call('HINCRBY', key, s, amount)
  redis.call('HINCRBY', key, 't', amount)
  redis.call('HSETNX', key, 'o', s)
  redis.call('HSET', key, 'n', s)
  redis.call('PEXPIRE', key, (SPAN + 1) * 1000)
end

-- When enough of the oldest use will have left for `amount` to fit (only
-- asked on a refusal: walks the window's seconds).
local function retry_ms(key, total, amount, limit)
  local freed = 0
  local oldest = tonumber(redis.call('HGET', key, 'o')) or sec
  for s = oldest, sec do
    local n = tonumber(redis.call('HGET', key, s))
    if n then
      freed = freed + n
      if total - freed + amount <= limit then
        return (s + SPAN) * 1000 - now_ms
      end
    end
  end
  return SPAN * 1000
end

local function stretch(key, ms)
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end

-- Admits one request under every rate rule that applies and reserves its
-- worst-case cost at every budget that applies: all or nothing, in one
-- round trip.
--
-- KEYS: per rule (3): requests hash, tokens hash, concurrency zset;
--       per budget (2): budget hash {w, s, r}, reservations zset;
--       last: the live-requests zset.
-- ARGV: id, ttl_ms, rules, budgets, tokens,
--       per rule (3): rpm, tpm, max_concurrent ("" = none),
--       per budget (5): window, limit, amount, enforce (1|0), key_ttl_s (0 = keep).
-- Reply: refused {0, kind (1 requests, 2 tokens, 3 concurrent, 4 budget),
--                 index, limit, used, retry_ms, never_fits}
--        admitted {1, second, now_ms, per rule: rpm_left, rpm_reset_ms, tpm_left,
--                  tpm_reset_ms (-1 = no such limit), per budget: used}
local function take()
  local id = ARGV[1]
  local ttl = tonumber(ARGV[2])
  local nr = tonumber(ARGV[3])
  local nb = tonumber(ARGV[4])
  local tokens = tonumber(ARGV[5])
  -- Check everything first ...
  local used = {}
  for i = 1, nr do
    local k, a = (i - 1) * 3, 6 + (i - 1) * 3
    local rpm, tpm, maxc = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local u = {}
    if maxc then
      redis.call('ZREMRANGEBYSCORE', KEYS[k + 3], '-inf', now_ms)
      if redis.call('ZCARD', KEYS[k + 3]) >= maxc then
        return { 0, 3, i, maxc, maxc, 1000, 0 }
      end
    end
    if rpm then
      local n = window(KEYS[k + 1])
      if n + 1 > rpm then
        return { 0, 1, i, rpm, n, retry_ms(KEYS[k + 1], n, 1, rpm), rpm < 1 and 1 or 0 }
      end
      u.rq = n
    end
    if tpm then
      local n = window(KEYS[k + 2])
      if tokens > tpm then
        return { 0, 2, i, tpm, n, SPAN * 1000, 1 }
      end
      if n + tokens > tpm then
        return { 0, 2, i, tpm, n, retry_ms(KEYS[k + 2], n, tokens, tpm), 0 }
      end
      u.tk = n
    end
    used[i] = u
  end
  local kb, ab = nr * 3, 6 + nr * 3
  for j = 1, nb do
    local bkey, rkey = KEYS[kb + (j - 1) * 2 + 1], KEYS[kb + (j - 1) * 2 + 2]
    local a = ab + (j - 1) * 5
    -- Reservations past their TTL belong to requests whose replica died.
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', rkey, '-inf', now_ms)) do
      local amount = string.match(m, ':(%d+)$')
      if amount and amount ~= '0' then
        redis.call('HINCRBY', bkey, 'r', '-' .. amount)
      end
      redis.call('ZREM', rkey, m)
    end
    if redis.call('HGET', bkey, 'w') ~= ARGV[a] then
      redis.call('HSET', bkey, 'w', ARGV[a], 's', '0')
    end
    if ARGV[a + 3] == '1' then
      local v = redis.call('HMGET', bkey, 's', 'r')
      local n = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
      if n + tonumber(ARGV[a + 2]) > tonumber(ARGV[a + 1]) then
        return { 0, 4, j, 0, n, 0, 0 }
      end
    end
  end

  -- ... then take it all.
  local out = { 1, sec, now_ms }
  for i = 1, nr do
    local k, a = (i - 1) * 3, 6 + (i - 1) * 3
    local rpm, tpm, maxc = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    if maxc then
      redis.call('ZADD', KEYS[k + 3], now_ms + ttl, id)
      stretch(KEYS[k + 3], ttl + 1000)
    end
    local reset = (sec + SPAN) * 1000 - now_ms
    if rpm then
      add(KEYS[k + 1], sec, 1)
      out[#out + 1] = rpm - used[i].rq - 1
      out[#out + 1] = reset
    else
      out[#out + 1] = -1
      out[#out + 1] = -1
    end
    if tpm then
      add(KEYS[k + 2], sec, ARGV[5])
      out[#out + 1] = tpm - used[i].tk - tokens
      out[#out + 1] = reset
    else
      out[#out + 1] = -1
      out[#out + 1] = -1
    end
  end
  for j = 1, nb do
    local bkey, rkey = KEYS[kb + (j - 1) * 2 + 1], KEYS[kb + (j - 1) * 2 + 2]
    local a = ab + (j - 1) * 5
    local r = redis.call('HINCRBY', bkey, 'r', ARGV[a + 2])
    redis.call('ZADD', rkey, now_ms + ttl, id .. ':' .. ARGV[a + 2])
    stretch(rkey, ttl + 1000)
    local keep = tonumber(ARGV[a + 4])
    if keep > 0 then
      redis.call('EXPIRE', bkey, keep)
    end
    out[#out + 1] = (tonumber(redis.call('HGET', bkey, 's')) or 0) + r
  end
  local live = KEYS[#KEYS]
  redis.call('ZREMRANGEBYSCORE', live, '-inf', now_ms)
  redis.call('ZADD', live, now_ms + ttl, id)
  stretch(live, ttl + 1000)
  return out
end

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
local function settle()
  local id = ARGV[1]
  local booked = tonumber(ARGV[2])
  local nr = tonumber(ARGV[3])
  local nb = tonumber(ARGV[4])
  local reserved = tonumber(ARGV[5])
  local actual = tonumber(ARGV[6])

  -- A request settles once: its live entry goes with the first settlement.
  -- Missing before its expiry means this is a retry of one that went through.
  if redis.call('ZREM', KEYS[#KEYS], id) == 0 and tonumber(ARGV[7]) > now_ms then
    return { 0 }
  end

  for i = 1, nr do
    local k, a = (i - 1) * 2, 8 + (i - 1) * 2
    if ARGV[a] == '1' then
      local key = KEYS[k + 1]
      window(key)
      if sec - booked < SPAN and redis.call('HEXISTS', key, booked) == 1 then
        local d = actual - reserved
        if d ~= 0 then
          redis.call('HINCRBY', key, booked, d)
          redis.call('HINCRBY', key, 't', d)
        end
      elseif actual > 0 then
        -- The reservation left the window: what was used is charged now.
        add(key, sec, ARGV[6])
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
end

if op == 'take' then
  return take()
elseif op == 'settle' then
  return settle()
end
return redis.error_reply('unknown operation ' .. tostring(op))
