-- tollgate: one atomic sliding-window-log decision, the same algorithm as window/mod.rs (WindowLog),
-- decision for decision.
--
-- KEYS[1]  the key's log
-- ARGV[1]  'c' = check and consume, 's' = status (consumes nothing; keeps evictions)
-- ARGV[2]  max_requests
-- ARGV[3]  window in microseconds
-- ARGV[4]  cost
-- ARGV[5]  may-create: '1' when the instance holds a creation token for the key's tenant, else '0'
--          (then a consuming call on an absent key is refused and writes nothing)
-- ARGV[6]  optional: decision time in microseconds, used instead of Redis TIME (tests only; the
--          service never sends it). The key's expiry is absolute (PEXPIREAT) from this time too,
--          so tests send times at or after the real clock.
-- Returns {allowed 0|1, used, reset_at_us, retry_at_us or -1, now_us, created}, created being 1
-- when this call made the key, 0 when it did not, -1 when it refused to (may-create '0').
-- Errors 'TGCORRUPT <reason>' when the key held anything but a valid log (wrong type, truncated,
-- foreign or edited bytes, an older format): the key has been deleted (reset) by then, and the
-- caller answers this one decision per its store-error policy.
--
-- Representation: one Redis string, so memory is ~12 bytes per entry instead of the ~120 a sorted
-- set costs, and every read or write is a GETRANGE/SETRANGE of a few bytes, never O(entries):
--
--   header (96 bytes): 'TGWL', u32 version, then big-endian u64s: head, count, cap, base_time,
--          base_cum, evicted, a copy of the oldest live entry's time, the newest entry's time and
--          cumulative cost, the window of the last call, and a checksum of all of these
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
--
-- Validation is O(1): STRLEN, the header's magic, version, checksum and invariants, and bounds on
-- the records a call reads anyway. A record edited in the middle of the log is not detected (that
-- would take a scan); anything else is.

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

local H, R = 96, 12
local HFMT, RFMT = '>c4I4I8I8I8I8I8I8I8I8I8I8I8', '>I6I6'
local MAGIC, VERSION = 'TGWL', 1
-- Record offsets are 48-bit; rebase before one would overflow.
local LIMIT48 = 281474976710656
-- Far above what a log needs (a few times 65,537 entries after window changes, plus slack).
local MAXCAP = 1048576

local function corrupt(reason)
  redis.call('DEL', key)
  error({err = 'TGCORRUPT ' .. reason})
end

-- A checksum of the header fields: catches edited or torn headers, not an adversary who can
-- write Redis anyway. One fmod per field (it runs twice per call on the hot path); Lua applies
-- each multiply and add as one IEEE operation, so the value is the same on every Redis.
local fmod = math.fmod
local P = 4294967291
local function checksum(a, b, c, d, e, f, g, h, i, j)
  local x = fmod(VERSION * 65599 + a, P)
  x = fmod(x * 65599 + b, P)
  x = fmod(x * 65599 + c, P)
  x = fmod(x * 65599 + d, P)
  x = fmod(x * 65599 + e, P)
  x = fmod(x * 65599 + f, P)
  x = fmod(x * 65599 + g, P)
  x = fmod(x * 65599 + h, P)
  x = fmod(x * 65599 + i, P)
  return fmod(x * 65599 + j, P)
end

-- The header. head_at, last_at and last_c are meaningful only while head < count; a stored log
-- always has something live (a call that empties it deletes it).
local head, count, cap, base_t, base_c, evicted, head_at, last_at, last_c = 0, 0, 0, 0, 0, 0, 0, 0, 0
local last_window = window
local len = redis.pcall('STRLEN', key)
if type(len) == 'table' then corrupt('not a string') end
local exists = len > 0 or redis.call('EXISTS', key) == 1
if exists then
  if len < H then corrupt('shorter than the header') end
  local magic, version, check
  magic, version, head, count, cap, base_t, base_c, evicted, head_at, last_at, last_c, last_window,
    check = struct.unpack(HFMT, redis.call('GETRANGE', key, 0, H - 1))
  if magic ~= MAGIC then corrupt('no tollgate header (foreign bytes or an older format)') end
  if version ~= VERSION then corrupt('unknown format version') end
  if check ~= checksum(head, count, cap, base_t, base_c, evicted, head_at, last_at, last_c,
      last_window) then
    corrupt('header checksum mismatch')
  end
  if not (head < count and count <= cap and cap <= MAXCAP) then corrupt('record bounds') end
  if len ~= H + cap * R then corrupt('length does not match the capacity') end
  if not (last_window >= 1 and base_t <= head_at and head_at <= last_at
      and last_at - base_t < LIMIT48 and base_c <= evicted and evicted < last_c
      and last_c - base_c < LIMIT48) then
    corrupt('inconsistent header')
  end
end
-- From here on the header is trusted.

-- Bounded state: a new key needs the instance's creation token; existing keys never do.
if consume and not exists and ARGV[5] == '0' then
  return {0, 0, now, -1, now, -1}
end

local function rec(i)
  local s = redis.call('GETRANGE', key, H + i * R, H + i * R + R - 1)
  local a, c = struct.unpack(RFMT, s)
  return a + base_t, c + base_c
end

-- Evict, first under the window of the previous call (what its TTL would have expired), then
-- under this one: entries at `at` are counted while now < at + window.
local changed = false
local dirty = exists and last_window ~= window
if exists then
  local w = math.min(last_window, window)
  if head_at + w <= now then
    local lo, hi = head + 1, count
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if rec(mid) + w > now then hi = mid else lo = mid + 1 end
    end
    local _, c = rec(lo - 1)
    if c <= evicted or c > last_c or (lo == count) ~= (c == last_c) then
      corrupt('records out of order')
    end
    evicted = c
    head = lo
    if head < count then
      local at = rec(head)
      if at < head_at or at > last_at then corrupt('records out of order') end
      head_at = at
    end
    changed = true
  end
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

-- Writes the header and sets the key to expire when its newest entry leaves the window of this
-- call: the same moment the memory store's sweep would drop it.
local function save()
  local lt = last_at or 0
  redis.call('SETRANGE', key, 0, struct.pack(HFMT, MAGIC, VERSION, head, count, cap, base_t,
    base_c, evicted, head_at, lt, last_c, window,
    checksum(head, count, cap, base_t, base_c, evicted, head_at, lt, last_c, window)))
  redis.call('PEXPIREAT', key, math.ceil((lt + window) / 1000))
end

-- Give memory back once live records fill under a quarter of the string; only after evictions.
if changed and head < count and cap > 64 and (count - head) * 4 < cap then
  rewrite(math.max(4, (count - head) * 2))
end

if not consume then
  -- A status read keeps what it evicted and the window it read under, as WindowLog does: both
  -- stores must forget the same history.
  if changed or dirty then
    if head == count then redis.call('DEL', key) else save() end
  end
  local allowed = used < max
  local retry = -1
  if not allowed then retry = fits_at(1) end
  return {allowed and 1 or 0, used, reset_at(), retry, now, 0}
end

if used + cost > max then
  if changed or dirty then save() end
  return {0, used, reset_at(), fits_at(cost), now, 0}
end

-- A request joins the newest entry when it falls in the same tick of this window (or the clock
-- stepped back), and the entry takes its time; otherwise it starts an entry at its own time.
local tick = math.max(1, math.floor(window / 65536))
local at = now
local merge = false
if last_at ~= nil then
  -- The end of the newest entry's tick; fmod is exact on doubles, unlike a division at 1e15.
  local tick_end = last_at - math.fmod(last_at, tick)
  if tick_end < last_at then tick_end = tick_end + tick end
  if now <= tick_end then
    merge = true
    at = math.max(now, last_at)
  end
end
local newc = last_c + cost

-- Rebase before either path packs an offset that would not fit 48 bits.
if last_at ~= nil and (at - base_t >= LIMIT48 or newc - base_c >= LIMIT48) then
  rewrite(math.max(cap, count - head + 4), head_at, evicted)
end

if merge then
  redis.call('SETRANGE', key, H + (count - 1) * R, struct.pack(RFMT, at - base_t, newc - base_c))
  if head == count - 1 then head_at = at end
else
  if head == count then
    -- Nothing live: start over in place, rebased at this entry.
    head, count, base_t, base_c = 0, 0, at, evicted
    if cap > 64 then rewrite(4) end
    head_at = at
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
save()
return {1, used + cost, reset_at(), -1, now, exists and 0 or 1}
