-- Admits one request under every rate rule that applies and reserves its
-- worst-case cost at every budget that applies: all or nothing, in one
-- round trip. The layout of KEYS and ARGV is built in src/fleet/script.rs.
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
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now_ms = sec * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = ARGV[1]
local ttl = tonumber(ARGV[2])
local nr = tonumber(ARGV[3])
local nb = tonumber(ARGV[4])
local tokens = tonumber(ARGV[5])
-- A use booked in second s counts until second s + SPAN begins: at least
-- 60 s, so no 60-second window ever holds more than the limit.
local SPAN = 61

-- The use in a per-second hash's window; drops the seconds that left it.
local function window(key)
  local h = redis.call('HGETALL', key)
  local total, seconds = 0, {}
  for i = 1, #h, 2 do
    local s = tonumber(h[i])
    if s <= sec - SPAN then
      redis.call('HDEL', key, h[i])
    else
      local n = tonumber(h[i + 1])
      total = total + n
      seconds[#seconds + 1] = { s, n }
    end
  end
  table.sort(seconds, function(a, b) return a[1] < b[1] end)
  return total, seconds
end

-- When enough of the oldest use will have left for `amount` to fit.
local function retry_ms(seconds, total, amount, limit)
  local freed = 0
  for _, e in ipairs(seconds) do
    freed = freed + e[2]
    if total - freed + amount <= limit then
      return (e[1] + SPAN) * 1000 - now_ms
    end
  end
  return SPAN * 1000
end

local function stretch(key, ms)
  if redis.call('PTTL', key) < ms then
    redis.call('PEXPIRE', key, ms)
  end
end

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
    local n, secs = window(KEYS[k + 1])
    if n + 1 > rpm then
      return { 0, 1, i, rpm, n, retry_ms(secs, n, 1, rpm), rpm < 1 and 1 or 0 }
    end
    u.rq = n
  end
  if tpm then
    local n, secs = window(KEYS[k + 2])
    if tokens > tpm then
      return { 0, 2, i, tpm, n, SPAN * 1000, 1 }
    end
    if n + tokens > tpm then
      return { 0, 2, i, tpm, n, retry_ms(secs, n, tokens, tpm), 0 }
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
    redis.call('HINCRBY', KEYS[k + 1], sec, 1)
    redis.call('PEXPIRE', KEYS[k + 1], (SPAN + 1) * 1000)
    out[#out + 1] = rpm - used[i].rq - 1
    out[#out + 1] = reset
  else
    out[#out + 1] = -1
    out[#out + 1] = -1
  end
  if tpm then
    redis.call('HINCRBY', KEYS[k + 2], sec, ARGV[5])
    redis.call('PEXPIRE', KEYS[k + 2], (SPAN + 1) * 1000)
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
