-- tollgate: one atomic sliding-window-log decision, the same algorithm as window.rs (WindowLog).
--
-- KEYS[1]  the key's log
-- ARGV[1]  'c' = check and consume, 's' = status (consumes nothing; keeps evictions)
-- ARGV[2]  max_requests
-- ARGV[3]  window in microseconds
-- ARGV[4]  cost
-- ARGV[5]  may-create: '1' when the instance holds a creation token for the key's tenant, else '0'
--          (then a consuming call on an absent key is refused and writes nothing)
-- ARGV[6]  optional: decision time in microseconds, used instead of Redis TIME (differential tests
--          against WindowLog only; the service never sends it)
-- Returns {allowed 0|1, used, reset_at_us, retry_at_us or -1, now_us, created}, created being 1
-- when this call made the key, 0 when it did not, -1 when it refused to (may-create '0').
--
-- Representation: one Redis string, so memory is ~12 bytes per entry instead of the ~120 a sorted
-- set costs, and every read or write is a GETRANGE/SETRANGE of a few bytes, never O(entries):
--
--   header (72 bytes, big-endian u64s): head, count, cap, base_time, base_cum, evicted, and a
--          copy of the oldest live entry's time and the newest entry's time and cumulative cost,
--          so the common decision reads 72 bytes and touches no record
--   records (12 bytes each, index 0..cap): u48 time offset from base_time, u48 cumulative cost
--                                           offset from base_cum
--
-- Records [head, count) are the live entries, oldest first; [0, head) have left the window but
-- are still in the string until the next compaction; [count, cap) is zeroed spare room that lets
-- appends write in place. Redis grows strings by doubling, which would double memory per entry, so
-- the script manages capacity itself: it rewrites the string (copying only live records) when it
-- is full, either at the same size when at least 1/8 of it is dead, or 25% larger; and it shrinks
-- it when live records fill less than a quarter. Each rewrite copies O(live) bytes after at least
-- O(live/8) appends or evictions, so the cost per call stays O(1) amortized plus O(log n) for the
-- binary searches.

local key = KEYS[1]
local consume = ARGV[1] == 'c'
local max = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local now
if ARGV[6] then
  now = tonumber(ARGV[6])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local H, R = 72, 12
local HFMT, RFMT = '>I8I8I8I8I8I8I8I8I8', '>I6I6'
-- Record offsets are 48-bit; rebase before one would overflow.
local LIMIT48 = 281474976710656

-- head_at, last_at and last_c are meaningful only while head < count (something is live).
local head, count, cap, base_t, base_c, evicted, head_at, last_at, last_c = 0, 0, 0, 0, 0, 0, 0, 0, 0
local hdr = redis.call('GETRANGE', key, 0, H - 1)
if #hdr == H then
  head, count, cap, base_t, base_c, evicted, head_at, last_at, last_c = struct.unpack(HFMT, hdr)
end

-- Bounded state: a new key needs the instance's creation token; existing keys never do.
local existed = hdr ~= ''
if consume and not existed and ARGV[5] == '0' then
  return {0, 0, now, -1, now, -1}
end

local function rec(i)
  local s = redis.call('GETRANGE', key, H + i * R, H + i * R + R - 1)
  local a, c = struct.unpack(RFMT, s)
  return a + base_t, c + base_c
end

-- Evict: entries at `at` are counted while now < at + window.
local changed = false
if head < count and head_at + window <= now then
  local lo, hi = head + 1, count
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if rec(mid) + window > now then hi = mid else lo = mid + 1 end
  end
  local _, c = rec(lo - 1)
  evicted = c
  head = lo
  if head < count then head_at = rec(head) end
  changed = true
end

if head == count then
  last_at, last_c = nil, evicted
end
local used = last_c - evicted

local function reset_at()
  if head < count then return head_at + window end
  return now
end

-- Earliest time at which `c` more fits: the expiry of the first entry whose departure brings the
-- count down to max - c.
local function fits_at(c)
  local need = last_c + c - max
  if need <= evicted then return now end
  local lo, hi = head, count
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local _, cm = rec(mid)
    if cm < need then lo = mid + 1 else hi = mid end
  end
  if lo < count then return math.max(rec(lo) + window, now) end
  return reset_at()
end

-- Rewrites the string to hold only the live records, with room for `newcap`, rebased when asked.
local function rewrite(newcap, rebase_t, rebase_c)
  local live = count - head
  local body = ''
  if live > 0 then
    body = redis.call('GETRANGE', key, H + head * R, H + count * R - 1)
    if rebase_t then
      local parts = {}
      for i = 0, live - 1 do
        local a, c = struct.unpack(RFMT, body, i * R + 1)
        parts[#parts + 1] = struct.pack(RFMT, a + base_t - rebase_t, c + base_c - rebase_c)
      end
      body = table.concat(parts)
    end
  end
  if rebase_t then base_t, base_c = rebase_t, rebase_c end
  redis.call('SET', key, string.rep('\0', H) .. body .. string.rep('\0', (newcap - live) * R))
  head, count, cap = 0, live, newcap
  changed = true
end

local function write_header()
  redis.call('SETRANGE', key, 0, struct.pack(HFMT, head, count, cap, base_t, base_c, evicted,
    head_at, last_at or 0, last_c))
end

local function expire()
  -- With a test-supplied time, Redis's own expiry (real time) would not match the log's time.
  if last_at == nil or ARGV[6] then return end
  -- The key is useless once its newest entry leaves the window.
  local ttl_us = last_at + window - now
  redis.call('PEXPIRE', key, math.max(1, math.ceil(ttl_us / 1000)))
end

-- Give memory back once live records fill under a quarter of the string; only after evictions.
if changed and head < count and cap > 64 and (count - head) * 4 < cap then
  rewrite(math.max(4, (count - head) * 2))
end

if not consume then
  -- A status read keeps what it evicted, as WindowLog does: eviction under a shorter window
  -- must be permanent in both stores or they would diverge.
  if changed then
    if head == count then
      redis.call('DEL', key)
    else
      write_header()
      expire()
    end
  end
  local allowed = used < max
  local retry = -1
  if not allowed then retry = fits_at(1) end
  return {allowed and 1 or 0, used, reset_at(), retry, now, 0}
end

if used + cost > max then
  if changed then
    write_header()
    expire()
  end
  return {0, used, reset_at(), fits_at(cost), now, 0}
end

local tick = math.max(1, math.floor(window / 65536))
-- Round up to the tick; fmod is exact on doubles, unlike a division at 1e15.
local at = now - math.fmod(now, tick)
if at < now then at = at + tick end
-- Keep entries ordered even if the window (so the tick) changed or the clock stepped back.
if last_at ~= nil and last_at > at then at = last_at end
local newc = last_c + cost

if last_at ~= nil and last_at == at then
  redis.call('SETRANGE', key, H + (count - 1) * R, struct.pack(RFMT, at - base_t, newc - base_c))
else
  if head == count then
    -- Nothing live: start over in place, rebased at this entry.
    head, count, base_t, base_c = 0, 0, at, evicted
    if cap > 64 then rewrite(4) end
    head_at = at
  elseif at - base_t >= LIMIT48 or newc - base_c >= LIMIT48 then
    rewrite(math.max(cap, count - head + 4), head_at, evicted)
  end
  if count >= cap then
    local live = count - head
    if head > 0 and head * 8 >= cap then
      rewrite(cap)
    else
      rewrite(live + math.max(4, math.floor(live / 4)))
    end
  end
  redis.call('SETRANGE', key, H + count * R, struct.pack(RFMT, at - base_t, newc - base_c))
  count = count + 1
end
last_at, last_c = at, newc
write_header()
expire()
return {1, used + cost, reset_at(), -1, now, existed and 0 or 1}
