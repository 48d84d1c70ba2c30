-- tollgate: one atomic decision over several keys, each under several limits, every algorithm
-- (README "Policies"; the formulas are the ones the memory store and the reference model use).
--
-- ARGV[1]  op: 'c' consume, 's' status, 'r' report (consume without checking), 'f' refund
-- ARGV[2]  decision time in µs, or '' for Redis TIME (the service always sends ''; tests send a
--          time, and expiries are absolute from it, so tests send times at or after the real clock)
-- ARGV[3]  number of items; then per item: cost, may-create ('1' when the instance holds a
--          creation token for the item's tenant; with '0' a consume or report on an item none of
--          whose keys exist is refused and writes nothing), number of limits n, and n times
--          (kind, max, window µs, burst). kind: 'l' sliding log, 'g' gcra, 'c' sliding window
--          counter, 'f' fixed window, 'd' / 'w' / 'm' fixed window on the UTC day / ISO week /
--          month; upper case = shadow limit.
-- KEYS     one per limit, in the order of ARGV.
-- Returns {now, allowed 0|1, refused item (1-based) or 0, then per item: allowed, index of the
--          first shadow limit that would have denied (0-based) or -1, created (1 when this call
--          made the item's first key, else 0), then per limit: allowed, remaining, reset_at µs,
--          retry_at µs or -1, used (cost counted now: the log's in-window total, the counter's
--          current bucket, the fixed window's count, gcra's cost units queued ahead of now)}.
-- Errors 'TGCORRUPT <index of the key in KEYS> <reason>' when a key held anything but valid state (wrong type, truncated,
-- foreign or edited bytes, an older format): the key has been deleted (reset) by then and nothing
-- else was written.
--
-- Consume is all or nothing: every limit of every item is read and decided first (phase 1), and
-- only if every non-shadow limit allows does anything consume (phase 2). A shadow limit that would
-- deny consumes nothing. State per algorithm:
--   sliding log: the exact log (format below), <= 12 bytes per entry plus a 96-byte header;
--   gcra: 'G' + the theoretical arrival time (double), 9 bytes, expiring at that time;
--   counter: 'C' + bucket start, count, previous count (doubles), 25 bytes;
--   fixed: 'F' + period start, count (doubles), 17 bytes.
-- Every number stays below 2^53, so doubles hold them exactly.

local op = ARGV[1]
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local checking = op == 'c' or op == 's'
local floor, ceil, max, min, fmod = math.floor, math.ceil, math.max, math.min, math.fmod
local spack, sunpack = struct.pack, struct.unpack

local function corrupt(key, reason)
  redis.call('DEL', key)
  for i = 1, #KEYS do
    if KEYS[i] == key then error({err = 'TGCORRUPT ' .. i .. ' ' .. reason}) end
  end
  error({err = 'TGCORRUPT 0 ' .. reason})
end

-- Reads a key's string value; a wrong type is corrupt.
local function get(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then corrupt(key, 'not a string') end
  return v
end

local function expire_ms(us)
  return ceil(us / 1000)
end

---------------------------------------------------------------------------------------------------
-- Sliding log. One Redis string, so memory is ~12 bytes per entry instead of the ~120 a sorted set
-- costs, and every read or write is a GETRANGE/SETRANGE of a few bytes, never O(entries):
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

local H, R = 96, 12
local HFMT, RFMT = '>c4I4I8I8I8I8I8I8I8I8I8I8I8', '>I6I6'
local MAGIC, VERSION = 'TGWL', 1
-- Record offsets are 48-bit; rebase before one would overflow.
local LIMIT48 = 281474976710656
-- Far above what a log needs (a few times 65,537 entries after window changes, plus slack).
local MAXCAP = 1048576

-- A checksum of the header fields: catches edited or torn headers, not an adversary who can
-- write Redis anyway. Lua applies each multiply and add as one IEEE operation, so the value is
-- the same on every Redis.
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

-- The newest live record is written lazily (when a newer entry starts, or before a rewrite
-- copies the records): the header's copy of it is the truth, so a merge into it writes the header
-- alone.
local function rec(s, i)
  if i == s.count - 1 and s.last_at then return s.last_at, s.last_c end
  local key = s.key
  local a, c = sunpack(RFMT, redis.call('GETRANGE', key, H + i * R, H + i * R + R - 1))
  return a + s.base_t, c + s.base_c
end

local function flush_newest(s)
  if s.last_at and s.count > s.head then
    redis.call('SETRANGE', s.key, H + (s.count - 1) * R,
      spack(RFMT, s.last_at - s.base_t, s.last_c - s.base_c))
  end
end

-- Reads the header and evicts, first under the window of the previous call (what its TTL would
-- have expired), then under this one: entries at `at` are counted while now < at + window.
local function slog_load(s)
  local key, window = s.key, s.window
  local head, count, cap, base_t, base_c, evicted, head_at, last_at, last_c = 0, 0, 0, 0, 0, 0, 0,
    0, 0
  local last_window = window
  local len = redis.pcall('STRLEN', key)
  if type(len) == 'table' then corrupt(key, 'not a string') end
  local exists = len > 0 or redis.call('EXISTS', key) == 1
  if exists then
    if len < H then corrupt(key, 'shorter than the header') end
    local magic, version, check
    magic, version, head, count, cap, base_t, base_c, evicted, head_at, last_at, last_c,
      last_window, check = sunpack(HFMT, redis.call('GETRANGE', key, 0, H - 1))
    if magic ~= MAGIC then corrupt(key, 'no tollgate header (foreign bytes or an older format)') end
    if version ~= VERSION then corrupt(key, 'unknown format version') end
    if check ~= checksum(head, count, cap, base_t, base_c, evicted, head_at, last_at, last_c,
        last_window) then
      corrupt(key, 'header checksum mismatch')
    end
    if not (head < count and count <= cap and cap <= MAXCAP) then corrupt(key, 'record bounds') end
    if len ~= H + cap * R then corrupt(key, 'length does not match the capacity') end
    if not (last_window >= 1 and base_t <= head_at and head_at <= last_at
        and last_at - base_t < LIMIT48 and base_c <= evicted and evicted < last_c
        and last_c - base_c < LIMIT48) then
      corrupt(key, 'inconsistent header')
    end
  end
  s.exists, s.head, s.count, s.cap, s.base_t, s.base_c = exists, head, count, cap, base_t, base_c
  s.evicted, s.head_at, s.last_at, s.last_c = evicted, head_at, last_at, last_c
  s.changed, s.dirty = false, exists and last_window ~= window
  if exists then
    local w = min(last_window, window)
    if head_at + w <= now then
      local lo, hi = head + 1, count
      while lo < hi do
        local mid = floor((lo + hi) / 2)
        if rec(s, mid) + w > now then hi = mid else lo = mid + 1 end
      end
      local _, c = rec(s, lo - 1)
      if c <= evicted or c > last_c or (lo == count) ~= (c == last_c) then
        corrupt(key, 'records out of order')
      end
      s.evicted = c
      s.head = lo
      if lo < count then
        local at = rec(s, lo)
        if at < head_at or at > last_at then corrupt(key, 'records out of order') end
        s.head_at = at
      end
      s.changed = true
    end
  end
  if s.head == s.count then s.last_at, s.last_c = nil, s.evicted end
  s.used = s.last_c - s.evicted
end

local function slog_reset_at(s)
  if s.head < s.count then return s.head_at + s.window end
  return now
end

-- Earliest time at which `c` more fits: the expiry of the first entry whose departure brings the
-- count down to max - c.
local function slog_fits_at(s, c)
  local need = s.last_c + c - s.max
  if need <= s.evicted then return now end
  local lo, hi = s.head, s.count
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    local _, cm = rec(s, mid)
    if cm < need then lo = mid + 1 else hi = mid end
  end
  if lo < s.count then return max(rec(s, lo) + s.window, now) end
  -- Only a shadow limit is asked for more than its max (costs are validated against the rest);
  -- the reference model answers now.
  return now
end

-- Rewrites the string to hold only the live records, with room for `newcap`, rebased when asked.
local function slog_rewrite(s, newcap, rebase_t, rebase_c)
  local live = s.count - s.head
  local body = ''
  if live > 0 then
    flush_newest(s)
    body = redis.call('GETRANGE', s.key, H + s.head * R, H + s.count * R - 1)
    if rebase_t then
      local parts = {}
      for i = 0, live - 1 do
        local a, c = sunpack(RFMT, body, i * R + 1)
        parts[#parts + 1] = spack(RFMT, a + s.base_t - rebase_t, c + s.base_c - rebase_c)
      end
      body = table.concat(parts)
    end
  end
  if rebase_t then s.base_t, s.base_c = rebase_t, rebase_c end
  redis.call('SET', s.key, string.rep('\0', H) .. body .. string.rep('\0', (newcap - live) * R))
  s.head, s.count, s.cap = 0, live, newcap
  s.changed = true
end

-- Writes the header and sets the key to expire at the end of its newest entry's tick plus the
-- window of this call: at most one tick after the memory store's sweep would drop it, and a
-- request merged into that entry cannot move it, so redis_consume_one.lua (which follows the same
-- rule) skips the PEXPIREAT on its hot path. An empty log is deleted.
local function slog_save(s)
  if s.head == s.count then
    redis.call('DEL', s.key)
    return
  end
  local lt, w = s.last_at or 0, s.window
  redis.call('SETRANGE', s.key, 0, spack(HFMT, MAGIC, VERSION, s.head, s.count, s.cap, s.base_t,
    s.base_c, s.evicted, s.head_at, lt, s.last_c, w,
    checksum(s.head, s.count, s.cap, s.base_t, s.base_c, s.evicted, s.head_at, lt, s.last_c, w)))
  local tick = max(1, floor(w / 65536))
  local tick_end = lt - fmod(lt, tick)
  if tick_end < lt then tick_end = tick_end + tick end
  redis.call('PEXPIREAT', s.key, expire_ms(tick_end + w))
end

-- Logs `cost` at now. A request joins the newest entry when it falls in the same tick of this
-- window (or the clock stepped back), and the entry takes its time; otherwise it starts an entry
-- at its own time.
local function slog_push(s, cost)
  local tick = max(1, floor(s.window / 65536))
  local at = now
  local merge = false
  if s.last_at ~= nil then
    -- The end of the newest entry's tick; fmod is exact on doubles, unlike a division at 1e15.
    local tick_end = s.last_at - fmod(s.last_at, tick)
    if tick_end < s.last_at then tick_end = tick_end + tick end
    if now <= tick_end then
      merge = true
      at = max(now, s.last_at)
    end
  end
  local newc = s.last_c + cost
  -- Rebase before either path packs an offset that would not fit 48 bits.
  if s.last_at ~= nil and (at - s.base_t >= LIMIT48 or newc - s.base_c >= LIMIT48) then
    slog_rewrite(s, max(s.cap, s.count - s.head + 4), s.head_at, s.evicted)
  end
  if merge then
    if s.head == s.count - 1 then s.head_at = at end
  else
    if s.head == s.count then
      -- Nothing live: start over in place, rebased at this entry.
      s.head, s.count, s.base_t, s.base_c = 0, 0, at, s.evicted
      if s.cap > 64 then slog_rewrite(s, 4) end
      s.head_at = at
    end
    if s.count >= s.cap then
      local live = s.count - s.head
      if s.head > 0 and s.head * 8 >= s.cap then
        slog_rewrite(s, s.cap)
      else
        slog_rewrite(s, live + max(4, floor(live / 4)))
      end
    end
    flush_newest(s)
    s.count = s.count + 1
  end
  s.last_at, s.last_c = at, newc
  s.used = newc - s.evicted
end

-- Gives back up to `cost` from the newest live entries: the first entry whose cumulative cost
-- reaches the new total keeps the part below it, the ones after it go.
local function slog_refund(s, cost)
  if s.head == s.count then return end
  local target = max(s.evicted, s.last_c - cost)
  if target == s.evicted then
    s.head, s.count = 0, 0
    s.last_at, s.last_c = nil, s.evicted
    s.used = 0
    return
  end
  local lo, hi = s.head, s.count - 1
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    local _, cm = rec(s, mid)
    if cm < target then lo = mid + 1 else hi = mid end
  end
  local at = rec(s, lo)
  redis.call('SETRANGE', s.key, H + lo * R, spack(RFMT, at - s.base_t, target - s.base_c))
  if lo + 1 < s.count then
    redis.call('SETRANGE', s.key, H + (lo + 1) * R, string.rep('\0', (s.count - lo - 1) * R))
  end
  s.count = lo + 1
  s.last_at, s.last_c = at, target
  s.used = target - s.evicted
end

---------------------------------------------------------------------------------------------------
-- Calendar periods (UTC), by the days-from-civil algorithm (H. Hinnant), not os.date.

local DAY = 86400000000

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

-- The fixed window [start, end) holding now.
local function period(kind, window)
  if kind == 'f' then
    local s = now - fmod(now, window)
    return s, s + window
  end
  local days = floor(now / DAY)
  if kind == 'd' then
    return days * DAY, (days + 1) * DAY
  elseif kind == 'w' then
    -- 1970-01-01 was a Thursday: Monday-based weekday = (days + 3) mod 7.
    local start = days - fmod(days + 3, 7)
    return start * DAY, (start + 7) * DAY
  end
  local y, m = civil_from_days(days)
  local ny, nm = y, m + 1
  if nm > 12 then ny, nm = y + 1, 1 end
  return days_from_civil(y, m, 1) * DAY, days_from_civil(ny, nm, 1) * DAY
end

---------------------------------------------------------------------------------------------------
-- Loading (phase 1): every limit's state as of now, whether `cost` fits, nothing written.

local function load(s, cost)
  local k = s.kind
  if k == 'l' then
    slog_load(s)
    s.ok = s.used + cost <= s.max
    return
  end
  local v = get(s.key)
  s.exists = v ~= false
  if k == 'g' then
    local tat = now
    if v then
      if #v ~= 9 or v:byte(1) ~= 71 then corrupt(s.key, 'not a gcra state') end
      tat = sunpack('<d', v, 2)
      if not (tat >= 0 and tat < 9007199254740992 and tat == floor(tat)) then
        corrupt(s.key, 'gcra time out of range')
      end
    end
    s.T = max(1, ceil(s.window / s.max))
    s.tat = tat
    s.ok = max(tat, now) + cost * s.T - now <= s.burst * s.T
  elseif k == 'c' then
    local w = s.window
    local start = now - fmod(now, w)
    local cur, prev = 0, 0
    if v then
      if #v ~= 25 or v:byte(1) ~= 67 then corrupt(s.key, 'not a counter state') end
      local st, c, p = sunpack('<ddd', v, 2)
      if not (c >= 0 and p >= 0 and c == floor(c) and p == floor(p) and st == floor(st)) then
        corrupt(s.key, 'counter out of range')
      end
      if st == start then
        cur, prev = c, p
        -- The stored bucket is this one: its expiry (start + 2W) stands, write in place.
        s.same = true
      elseif st == start - w then
        cur, prev = 0, c
      end
    end
    s.start, s.cur, s.prev = start, cur, prev
    s.weight = (w - (now - start)) / w
    s.ok = prev * s.weight + (cur + cost) <= s.max
  else
    local start, stop = period(k, s.window)
    local count = 0
    if v then
      if #v ~= 17 or v:byte(1) ~= 70 then corrupt(s.key, 'not a fixed window state') end
      local st, c = sunpack('<dd', v, 2)
      if not (c >= 0 and c == floor(c)) then corrupt(s.key, 'count out of range') end
      if st == start then
        count = c
        s.same = true
      end
    end
    s.start, s.stop, s.count = start, stop, count
    s.ok = count + cost <= s.max
  end
end

---------------------------------------------------------------------------------------------------
-- Writing (phase 2): consume / report add `cost` (add = true), refund gives it back, status and a
-- denied consume only keep what loading evicted (sliding log).

local function write(s, add, cost)
  local k = s.kind
  if k == 'l' then
    if s.changed and s.head < s.count and s.cap > 64 and (s.count - s.head) * 4 < s.cap then
      -- Give memory back once live records fill under a quarter of the string.
      slog_rewrite(s, max(4, (s.count - s.head) * 2))
    end
    if add == true then
      slog_push(s, cost)
    elseif add == false then
      slog_refund(s, cost)
    elseif not (s.changed or s.dirty) then
      return
    end
    slog_save(s)
    return
  end
  if add == nil then return end
  if k == 'g' then
    local base = max(s.tat, now)
    if add then
      s.tat = base + cost * s.T
    else
      s.tat = max(now, s.tat - cost * s.T)
    end
    if s.tat > now then
      redis.call('SET', s.key, spack('<c1d', 'G', s.tat), 'PXAT', floor(s.tat / 1000) + 1)
    elseif s.exists then
      redis.call('DEL', s.key)
    end
  elseif k == 'c' then
    if add then
      s.cur = s.cur + cost
    else
      local take = min(s.cur, cost)
      s.cur = s.cur - take
      s.prev = s.prev - min(s.prev, cost - take)
    end
    if s.cur > 0 or s.prev > 0 then
      local v = spack('<c1ddd', 'C', s.start, s.cur, s.prev)
      if s.same then
        redis.call('SETRANGE', s.key, 0, v)
      else
        redis.call('SET', s.key, v, 'PXAT', expire_ms(s.start + 2 * s.window))
      end
    elseif s.exists then
      redis.call('DEL', s.key)
    end
  else
    if add then
      s.count = s.count + cost
    else
      s.count = s.count - min(s.count, cost)
    end
    if s.count > 0 then
      local v = spack('<c1dd', 'F', s.start, s.count)
      if s.same then
        redis.call('SETRANGE', s.key, 0, v)
      else
        redis.call('SET', s.key, v, 'PXAT', expire_ms(s.stop))
      end
    elseif s.exists then
      redis.call('DEL', s.key)
    end
  end
end

---------------------------------------------------------------------------------------------------
-- The answer for one limit after the call: remaining, reset_at, retry_at (-1 when it fits).

local function verdict(s, cost, out)
  local k = s.kind
  local remaining, reset, retry, used
  if k == 'l' then
    used = s.used
    remaining = max(0, s.max - used)
    reset = slog_reset_at(s)
    if checking and not s.ok then retry = slog_fits_at(s, cost) end
  elseif k == 'g' then
    local T, bT = s.T, s.burst * s.T
    local base = max(s.tat, now)
    remaining = max(0, floor((bT - (base - now)) / T))
    used = ceil((base - now) / T)
    reset = base
    if checking and not s.ok then retry = max(s.tat, now) + cost * T - bT end
  elseif k == 'c' then
    local w, st, cur, prev = s.window, s.start, s.cur, s.prev
    local est = prev * s.weight
    used = cur
    remaining = max(0, floor(s.max - est - cur))
    if cur > 0 then
      reset = st + 2 * w
    elseif prev > 0 then
      reset = st + w
    else
      reset = now
    end
    if checking and not s.ok then
      local m = s.max
      if cur + cost <= m and prev > 0 then
        retry = st + ceil(w * (1 - (m - cur - cost) / prev))
        retry = max(now + 1, min(retry, st + w))
      elseif cost <= m and cur > 0 then
        retry = max(st + w, st + w + ceil(w * (1 - (m - cost) / cur)))
      else
        retry = st + 2 * w
      end
    end
  else
    used = s.count
    remaining = max(0, s.max - used)
    reset = s.stop
    if checking and not s.ok then retry = s.stop end
  end
  local n = #out
  out[n + 1] = (s.ok or not checking) and 1 or 0
  out[n + 2] = remaining
  out[n + 3] = reset
  out[n + 4] = retry or -1
  out[n + 5] = used
end

---------------------------------------------------------------------------------------------------

local items = {}
local a, ki = 4, 1
local refused = 0
for i = 1, tonumber(ARGV[3]) do
  local cost = tonumber(ARGV[a])
  local may_create = ARGV[a + 1] == '1'
  local n = tonumber(ARGV[a + 2])
  a = a + 3
  local limits = {}
  local any = false
  for j = 1, n do
    local kind = ARGV[a]
    local lower = string.lower(kind)
    local s = {key = KEYS[ki], kind = lower, shadow = lower ~= kind, max = tonumber(ARGV[a + 1]),
      window = tonumber(ARGV[a + 2]), burst = tonumber(ARGV[a + 3])}
    load(s, cost)
    if s.exists then any = true end
    limits[j] = s
    a, ki = a + 4, ki + 1
  end
  items[i] = {cost = cost, limits = limits, new = not any}
  if not any and not may_create and (op == 'c' or op == 'r') and refused == 0 then refused = i end
end

-- Decide.
local allowed = true
for _, it in ipairs(items) do
  it.allowed = true
  it.shadow_denied = -1
  for j, s in ipairs(it.limits) do
    if checking and not s.ok then
      if s.shadow then
        if it.shadow_denied < 0 then it.shadow_denied = j - 1 end
      else
        it.allowed = false
      end
    end
  end
  if not checking then it.allowed = true end
  if not it.allowed then allowed = false end
end
if refused > 0 then allowed = false end

-- Write.
for _, it in ipairs(items) do
  local cost = it.cost
  it.created = 0
  for _, s in ipairs(it.limits) do
    local add
    if refused == 0 then
      if op == 'c' then
        if allowed and s.ok then add = true end
      elseif op == 'r' then
        add = true
      elseif op == 'f' then
        add = false
      end
    end
    write(s, add, cost)
    if add == true and it.new then it.created = 1 end
  end
end

local out = {now, allowed and 1 or 0, refused}
for _, it in ipairs(items) do
  local n = #out
  out[n + 1] = it.allowed and 1 or 0
  out[n + 2] = it.shadow_denied
  out[n + 3] = it.created
  for _, s in ipairs(it.limits) do verdict(s, it.cost, out) end
end
return out
