-- tollgate: one consume on one key under one enforced limit, the common case of
-- redis_policy.lua, written for Redis CPU. ARGV, KEYS and every key's format are those of
-- redis_policy.lua (read its header comment), so the two scripts share keys; the store sends here
-- exactly the calls with op 'c', one item and one limit whose kind is lower case (not shadow).
--
-- ARGV[1] packs the item: kind, may-create ('1' / '0'), then cost, max, window µs and burst as
-- little-endian doubles; ARGV[2] is the time as in redis_policy.lua.
-- Returns {now, flags, remaining, reset_at, retry_at or -1, used} packed as little-endian doubles
-- in one string (all integers below 2^53); flags: 1 allowed, 2 refused (no creation token for a
-- new key), 4 the limit allows, 8 created. Turning a Lua table into a reply, or each argument
-- into a Lua string, costs Redis more than packing them.
--
-- Where the time goes (callgrind instructions per call on Redis 7.0, so measured without noise):
-- a redis.call costs about 8,000, a C function called from Lua (math.floor, tonumber, fmod)
-- a few hundred, creating a closure about as much, while Lua arithmetic is a few instructions.
-- The general script defines some twenty closures per call and calls fmod twenty times for its
-- checksum. So this one: the common cases in straight lines without closures (a request that
-- joins the newest entry or creates the key: TIME, GETRANGE and SET / SETRANGE of the header; one
-- that starts an entry or starts over: one or two more writes), operators instead of library
-- calls, and functions created only on the paths that need them (evictions that read records,
-- denials, rewrites). The checksum's `%` equals the general script's fmod: operands stay below 2^53 and
-- a quotient that rounds up is corrected (`if x < 0`).
--
-- Fewer Redis calls than the general script, same checks:
--   * no STRLEN: the length a log's header promises is checked against the reply of the
--     SETRANGE that writes the header, or with STRLEN only when the call writes nothing;
--   * no EXISTS: a new log is written with SET ... NX, which fails on an empty string;
--   * records are read eight at a time and the searches gallop from the oldest live record, so
--     evicting what left the window since the last call usually takes one read;
--   * the expiry is set only when it moves: a log expires at the end of its newest entry's tick
--     plus the window of the last call (redis_policy.lua sets the same), which a request merged
--     into that entry cannot move.

-- Several decisions in one call (the store batches the decisions that arrive together, see
-- store/redis_batch.rs): KEYS[1..N], ARGV[1] = N packed items of 34 bytes, ARGV[2] the time, read
-- once: every item decides at the same time, in order, exactly as N calls at that microsecond
-- would. The reply is the N items' 48 bytes, then the messages of the items that failed: such an
-- item's flags are 16 and its `remaining` is its message's length. Each item runs under pcall, so
-- a corrupt key (reset, as in a single call) fails only its own item, not the items decided before
-- it, whose writes Redis would keep while their callers saw an error. With one key the call is
-- exactly the single call above: same reply, same error replies. The constants live inside `one`:
-- upvalues would make every call allocate them (measured: ~3,500 instructions more per call).

-- Resets a corrupt key and fails its decision. Created once per call of the script, not per
-- decision, and taking the key instead of capturing it: a closure per decision cost ~400
-- instructions on the GCRA, counter and fixed-window paths.
local function corrupt(key, reason)
  redis.call('DEL', key)
  error({err = 'TGCORRUPT 1 ' .. reason})
end

-- One decision on `key`: its item packed in `packed` at `pos`, at time `now`. Returns the packed
-- reply, or a TGCORRUPT error reply (a table), or raises one.
local function one(key, packed, pos, now)
  -- Numbers go to redis.call formatted with '%d': Redis turns a Lua number argument into a
  -- string as a double (a C library conversion), ~1,500 instructions more per argument.
  local spack, sunpack, fmt = struct.pack, struct.unpack, string.format
  local REPLY = '<dddddd'
  local H, R = 96, 12
  local HFMT = '>c4I4I8I8I8I8I8I8I8I8I8I8I8'
  local LIMIT48 = 281474976710656
  local P = 4294967291
  -- burst is read by the GCRA path only (each unpacked field costs ~270 instructions).
  local kind, may_create, cost, max_n, window = sunpack('<c1c1ddd', packed, pos)
  may_create = may_create == '1'

  ---------------------------------------------------------------------------------------------------
  -- The hot path: a request that joins the newest entry of a log (same tick, same window, nothing
  -- to evict, room left). No closures (each costs an allocation per captured variable).

  local hdr, bad = false, nil
  if kind == 'l' then
    hdr = redis.pcall('GETRANGE', key, '0', '95')
    if type(hdr) == 'table' then
      bad = 'not a string'
    elseif hdr == '' then
      hdr = false
    elseif #hdr < H then
      bad = 'shorter than the header'
    end
  end
  local head, count, cap, base_t, base_c, evicted, head_at, last_at, last_c, last_window
  -- The checksum's running value after `head` and after `evicted`: a write that leaves the fields
  -- before them as they were resumes from there instead of hashing them again.
  local x_head, x_evicted
  if hdr and not bad then
    local tag, check
    -- Magic and version as one 8-byte string: one field to unpack instead of two.
    tag, head, count, cap, base_t, base_c, evicted, head_at, last_at, last_c,
      last_window, check = sunpack('>c8I8I8I8I8I8I8I8I8I8I8I8', hdr)
    -- The checksum of redis_policy.lua (VERSION 1), with `%` for fmod: operands stay below 2^53,
    -- and a quotient that rounds up is corrected by `if x < 0`.
    local x = (65599 + head) % P
    x_head = x
    x = (x * 65599 + count) % P
    if x < 0 then x = x + P end
    x = (x * 65599 + cap) % P
    if x < 0 then x = x + P end
    x = (x * 65599 + base_t) % P
    if x < 0 then x = x + P end
    x = (x * 65599 + base_c) % P
    if x < 0 then x = x + P end
    x = (x * 65599 + evicted) % P
    if x < 0 then x = x + P end
    x_evicted = x
    x = (x * 65599 + head_at) % P
    if x < 0 then x = x + P end
    x = (x * 65599 + last_at) % P
    if x < 0 then x = x + P end
    x = (x * 65599 + last_c) % P
    if x < 0 then x = x + P end
    x = (x * 65599 + last_window) % P
    if x < 0 then x = x + P end
    if tag ~= 'TGWL\0\0\0\1' then
      if tag:sub(1, 4) ~= 'TGWL' then
        bad = 'no tollgate header (foreign bytes or an older format)'
      else
        bad = 'unknown format version'
      end
    elseif check ~= x then
      bad = 'header checksum mismatch'
    elseif not (head < count and count <= cap and cap <= 1048576) then
      bad = 'record bounds'
    elseif not (last_window >= 1 and base_t <= head_at and head_at <= last_at
        and last_at - base_t < LIMIT48 and base_c <= evicted and evicted < last_c
        and last_c - base_c < LIMIT48) then
      bad = 'inconsistent header'
    end
  end
  if bad then
    redis.call('DEL', key)
    return redis.error_reply('TGCORRUPT 1 ' .. bad)
  end
  -- Four cases need no closures, under the window of the last call: the request joins the newest
  -- entry (merge), starts an entry after it with room in the string (append), starts over in a log
  -- whose entries have all left the window (restart), or is denied with nothing to evict and the
  -- oldest entry's departure making room (deny: one record read at most, nothing written).
  local plan, tick
  if hdr and last_window == window then
    tick = (window - window % 65536) / 65536
    if tick < 1 then tick = 1 end
    local r = last_at % tick
    if r < 0 then r = r + tick end
    local tick_end = last_at
    if r > 0 then tick_end = last_at - r + tick end
    local newc = last_c + cost
    if head_at + window > now and newc - evicted > max_n then
      -- Denied with nothing to evict: nothing changes. The retry time is when the oldest entry
      -- leaves, if that makes room (the general search stops there when it does).
      local retry = now
      if head == count - 1 then
        if last_c >= newc - max_n then retry = last_at + window end
      else
        local rec = redis.call('GETRANGE', key, fmt('%d', H + head * R), fmt('%d', H + head * R + R - 1))
        if #rec == R then
          local a, c = sunpack('>I6I6', rec)
          if c + base_c >= newc - max_n then
            retry = a + base_t + window
            if retry < now then retry = now end
          else
            retry = nil
          end
        else
          retry = nil
        end
      end
      if retry then
        if redis.call('STRLEN', key) ~= H + cap * R then
          redis.call('DEL', key)
          return redis.error_reply('TGCORRUPT 1 length does not match the capacity')
        end
        local used = last_c - evicted
        local remaining = max_n - used
        if remaining < 0 then remaining = 0 end
        return spack(REPLY, now, 0, remaining, head_at + window, retry, used)
      end
    elseif head_at + window > now then
      if now <= tick_end then
        local at = last_at
        if now > at then at = now end
        if newc - evicted <= max_n and newc - base_c < LIMIT48 and at - base_t < LIMIT48 then
          plan = 'merge'
        end
      elseif count < cap and newc - evicted <= max_n and now - base_t < LIMIT48
          and newc - base_c < LIMIT48 then
        plan = 'append'
      end
    elseif last_at + window <= now and cap <= 64 and cost <= max_n then
      plan = 'restart'
    end
  end
  if plan then
    local flush, flush_at
    if plan == 'merge' then
      if now > last_at then last_at = now end
      if head == count - 1 then head_at = last_at end
    elseif plan == 'append' then
      -- The newest entry goes to its record; the new one lives in the header.
      flush, flush_at = spack('>I6I6', last_at - base_t, last_c - base_c), count - 1
      count = count + 1
      last_at = now
    else
      evicted = last_c
      head, count, base_t, base_c, head_at, last_at = 0, 1, now, evicted, now, now
    end
    last_c = last_c + cost
    -- Only the header's changed tail is packed and written: a merge changes the fields from
    -- head_at on (offset 56), an append those from count on (offset 16), a restart all of them.
    -- (Offsets as strings: Redis formats a Lua number argument with sprintf.)
    -- Each packed field costs ~400 instructions, the checksum ~250 per field; the bytes before
    -- the tail are the ones just read and checked, so the header ends up as a whole write would
    -- leave it.
    local from, x
    if plan == 'merge' then
      from, x = '56', x_evicted
    elseif plan == 'append' then
      from, x = '16', x_head
      x = (x * 65599 + count) % P
      if x < 0 then x = x + P end
      x = (x * 65599 + cap) % P
      if x < 0 then x = x + P end
      x = (x * 65599 + base_t) % P
      if x < 0 then x = x + P end
      x = (x * 65599 + base_c) % P
      if x < 0 then x = x + P end
      x = (x * 65599 + evicted) % P
      if x < 0 then x = x + P end
    else
      from, x = '0', (65599 + head) % P
      x = (x * 65599 + count) % P
      if x < 0 then x = x + P end
      x = (x * 65599 + cap) % P
      if x < 0 then x = x + P end
      x = (x * 65599 + base_t) % P
      if x < 0 then x = x + P end
      x = (x * 65599 + base_c) % P
      if x < 0 then x = x + P end
      x = (x * 65599 + evicted) % P
      if x < 0 then x = x + P end
    end
    x = (x * 65599 + head_at) % P
    if x < 0 then x = x + P end
    x = (x * 65599 + last_at) % P
    if x < 0 then x = x + P end
    x = (x * 65599 + last_c) % P
    if x < 0 then x = x + P end
    x = (x * 65599 + window) % P
    if x < 0 then x = x + P end
    local header
    if from == '56' then
      header = spack('>I8I8I8I8I8', head_at, last_at, last_c, window, x)
    elseif from == '16' then
      header = spack('>I8I8I8I8I8I8I8I8I8I8', count, cap, base_t, base_c, evicted, head_at,
        last_at, last_c, window, x)
    else
      header = spack(HFMT, 'TGWL', 1, head, count, cap, base_t, base_c, evicted, head_at,
        last_at, last_c, window, x)
    end
    local length, n = H + cap * R, nil
    if flush and flush_at == 0 then
      -- Record 0 follows the header: one write.
      n = redis.call('SETRANGE', key, from, header .. flush)
    else
      if flush then
        n = redis.call('SETRANGE', key, fmt('%d', H + flush_at * R), flush)
        if n ~= length then
          redis.call('DEL', key)
          return redis.error_reply('TGCORRUPT 1 length does not match the capacity')
        end
      end
      n = redis.call('SETRANGE', key, from, header)
    end
    if n ~= length then
      redis.call('DEL', key)
      return redis.error_reply('TGCORRUPT 1 length does not match the capacity')
    end
    if plan ~= 'merge' then
      -- A new entry moves the expiry to the end of its tick plus the window; a merge leaves it.
      local e = now % tick
      if e < 0 then e = e + tick end
      if e > 0 then e = tick - e end
      e = now + e + window + 999
      local m = e % 1000
      if m < 0 then m = m + 1000 end
      redis.call('PEXPIREAT', key, fmt('%d', (e - m) / 1000))
    end
    local used = last_c - evicted
    return spack(REPLY, now, 5, max_n - used, head_at + window, -1, used)
  elseif kind == 'l' and not hdr and may_create and cost <= max_n then
    -- A new log: header, the entry (held in the header) and room for three more, in one SET that
    -- fails when the key holds an empty string; it expires at the end of the entry's tick plus
    -- the window. The checksum is over (head 0, count 1, cap 4, base_t now, base_c 0, evicted 0,
    -- head_at now, last_at now, last_c cost, window), step by step as on the merge path; its
    -- first three steps are constant: ((65599 * 65599 + 1) % P * 65599 + 4) % P = 780981427.
    local x = (780981427 * 65599 + now) % P
    if x < 0 then x = x + P end
    x = (x * 65599) % P
    if x < 0 then x = x + P end
    x = (x * 65599) % P
    if x < 0 then x = x + P end
    x = (x * 65599 + now) % P
    if x < 0 then x = x + P end
    x = (x * 65599 + now) % P
    if x < 0 then x = x + P end
    x = (x * 65599 + cost) % P
    if x < 0 then x = x + P end
    x = (x * 65599 + window) % P
    if x < 0 then x = x + P end
    local tick = (window - window % 65536) / 65536
    if tick < 1 then tick = 1 end
    local e = now % tick
    if e < 0 then e = e + tick end
    if e > 0 then e = tick - e end
    e = now + e + window + 999
    local r = e % 1000
    if r < 0 then r = r + 1000 end
    -- The header of the HFMT layout from literals and two small packs (base_t, head_at and
    -- last_at are all `now`): four packed fields instead of thirteen. Magic, version 1, head 0,
    -- count 1, cap 4; then base_t; base_c 0, evicted 0; head_at, last_at; last_c, window, check;
    -- then four empty records.
    local at = spack('>I8', now)
    local set = redis.call('SET', key,
      'TGWL\0\0\0\1\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\1\0\0\0\0\0\0\0\4' .. at
      .. '\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0' .. at .. at .. spack('>I8I8I8', cost, window, x)
      .. '\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0'
      .. '\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0',
      'PXAT', fmt('%d', (e - r) / 1000), 'NX')
    if not set then
      redis.call('DEL', key)
      return redis.error_reply('TGCORRUPT 1 shorter than the header')
    end
    return spack(REPLY, now, 13, max_n - cost, now + window, -1, cost)
  end

  ---------------------------------------------------------------------------------------------------
  -- Every other case.

  if kind ~= 'l' then
    local v = redis.pcall('GET', key)
    if type(v) == 'table' and v.err then corrupt(key, 'not a string') end
    local exists = v ~= false
    local refused = not exists and not may_create
    local ok, retry, remaining, reset, used
    if kind == 'g' then
      -- Integer arithmetic with operators (exact below 2^53); the general script's floor / ceil /
      -- max give the same values.
      local burst = sunpack('<d', packed, pos + 26)
      local tat = now
      if v then
        if #v ~= 9 or v:byte(1) ~= 71 then corrupt(key, 'not a gcra state') end
        tat = sunpack('<d', v, 2)
        if not (tat >= 0 and tat < 9007199254740992 and tat % 1 == 0) then
          corrupt(key, 'gcra time out of range')
        end
      end
      local r = window % max_n
      local T = (window - r) / max_n
      if r > 0 then T = T + 1 end
      if T < 1 then T = 1 end
      local bT = burst * T
      local base = tat
      if now > base then base = now end
      ok = base + cost * T - now <= bT
      if ok and not refused then
        tat = base + cost * T
        if tat > now then
          redis.call('SET', key, spack('<c1d', 'G', tat), 'PXAT',
            fmt('%d', (tat - tat % 1000) / 1000 + 1))
        elseif exists then
          redis.call('DEL', key)
        end
        base = tat
      elseif not ok then
        retry = base + cost * T - bT
      end
      local room, ahead = bT - (base - now), base - now
      remaining = 0
      if room > 0 then remaining = (room - room % T) / T end
      used = (ahead - ahead % T) / T
      if ahead % T > 0 then used = used + 1 end
      reset = base
    elseif kind == 'c' then
      local floor, ceil, max, min, fmod = math.floor, math.ceil, math.max, math.min, math.fmod
      local w = window
      local start = now - fmod(now, w)
      local cur, prev, same = 0, 0, false
      if v then
        if #v ~= 25 or v:byte(1) ~= 67 then corrupt(key, 'not a counter state') end
        local st, c, p = sunpack('<ddd', v, 2)
        if not (c >= 0 and p >= 0 and c == floor(c) and p == floor(p) and st == floor(st)) then
          corrupt(key, 'counter out of range')
        end
        if st == start then
          cur, prev, same = c, p, true
        elseif st == start - w then
          prev = c
        end
      end
      local weight = (w - (now - start)) / w
      ok = prev * weight + (cur + cost) <= max_n
      if ok and not refused then
        cur = cur + cost
        local val = spack('<c1ddd', 'C', start, cur, prev)
        if same then
          redis.call('SETRANGE', key, '0', val)
        else
          redis.call('SET', key, val, 'PXAT', fmt('%d', ceil((start + 2 * w) / 1000)))
        end
      end
      reset = now
      if cur > 0 then reset = start + 2 * w elseif prev > 0 then reset = start + w end
      if not ok then
        if cur + cost <= max_n and prev > 0 then
          retry = start + ceil(w * (1 - (max_n - cur - cost) / prev))
          retry = max(now + 1, min(retry, start + w))
        elseif cost <= max_n and cur > 0 then
          retry = max(start + w, start + w + ceil(w * (1 - (max_n - cost) / cur)))
        else
          retry = start + 2 * w
        end
      end
      remaining, used = max(0, floor(max_n - prev * weight - cur)), cur
    else
      -- Fixed windows: 'f' every `window` µs, 'd' / 'w' / 'm' the UTC day / ISO week / month.
      local floor, ceil, max, fmod = math.floor, math.ceil, math.max, math.fmod
      local DAY = 86400000000
      local start, stop
      if kind == 'f' then
        start = now - fmod(now, window)
        stop = start + window
      else
        local days = floor(now / DAY)
        if kind == 'd' then
          start, stop = days * DAY, (days + 1) * DAY
        elseif kind == 'w' then
          local s = days - fmod(days + 3, 7)
          start, stop = s * DAY, (s + 7) * DAY
        else
          -- Civil from days, then days from civil of this month's and the next month's first day
          -- (H. Hinnant's algorithms, as in redis_policy.lua).
          local z = days + 719468
          local era = floor(z / 146097)
          local doe = z - era * 146097
          local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
          local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
          local mp = floor((5 * doy + 2) / 153)
          local m = mp < 10 and mp + 3 or mp - 9
          local y = yoe + era * 400
          if m <= 2 then y = y + 1 end
          local ny, nm = y, m + 1
          if nm > 12 then ny, nm = y + 1, 1 end
          local function first_day(yy, mm)
            if mm <= 2 then yy = yy - 1 end
            local e = floor(yy / 400)
            local ye = yy - e * 400
            local mq = mm > 2 and mm - 3 or mm + 9
            return (e * 146097 + ye * 365 + floor(ye / 4) - floor(ye / 100)
              + floor((153 * mq + 2) / 5) - 719468) * DAY
          end
          start, stop = first_day(y, m), first_day(ny, nm)
        end
      end
      local count, same = 0, false
      if v then
        if #v ~= 17 or v:byte(1) ~= 70 then corrupt(key, 'not a fixed window state') end
        local st, c = sunpack('<dd', v, 2)
        if not (c >= 0 and c == floor(c)) then corrupt(key, 'count out of range') end
        if st == start then count, same = c, true end
      end
      ok = count + cost <= max_n
      if ok and not refused then
        count = count + cost
        local val = spack('<c1dd', 'F', start, count)
        if same then
          redis.call('SETRANGE', key, '0', val)
        else
          redis.call('SET', key, val, 'PXAT', fmt('%d', ceil(stop / 1000)))
        end
      end
      remaining, reset, used = max(0, max_n - count), stop, count
      if not ok then retry = stop end
    end
    local add = ok and not refused
    local flags = (add and 1 or 0) + (refused and 2 or 0) + (ok and 4 or 0)
      + ((add and not exists) and 8 or 0)
    return spack(REPLY, now, flags, remaining, reset, retry or -1, used)
  end

  ---------------------------------------------------------------------------------------------------
  -- Sliding log (format: redis_policy.lua), every case the hot path did not take.

  local RFMT = '>I6I6'

  -- The header checksum (see the hot path).
  local function checksum(a, b, c, d, e, f, g, h, i, j)
    local x = (65599 + a) % P
    for _, v in ipairs({b, c, d, e, f, g, h, i, j}) do
      x = (x * 65599 + v) % P
      if x < 0 then x = x + P end
    end
    return x
  end

  -- The end of the tick of window `w` holding `at`.
  local function tick_end(at, w)
    local t = (w - w % 65536) / 65536
    if t < 1 then t = 1 end
    local r = at % t
    if r < 0 then r = r + t end
    if r == 0 then return at end
    return at - r + t
  end

  -- Expiry in ms for a log whose newest entry is at `at`, under window `w`.
  local function expiry_ms(at, w)
    local e = tick_end(at, w) + w + 999
    local r = e % 1000
    if r < 0 then r = r + 1000 end
    return (e - r) / 1000
  end

  local exists = hdr ~= false
  if not exists then
    head, count, cap, base_t, base_c, evicted, head_at, last_at, last_c = 0, 0, 0, 0, 0, 0, 0, 0, 0
    last_window = window
  end
  -- The newest entry lives in the header (false when nothing is live); its record is written
  -- lazily, when a newer entry starts or before a rewrite copies the records.
  local newest = exists
  local length = H + cap * R

  -- Records, read eight at a time into a cache; created only on the paths that read records.
  local chunk, chunk_lo = '', 0
  local rec = nil
  local function records()
    rec = function(i)
      if newest and i == count - 1 then return last_at, last_c end
      local off = (i - chunk_lo) * R
      if i < chunk_lo or off + R > #chunk then
        local n = cap - i
        if n > 8 then n = 8 end
        chunk = redis.call('GETRANGE', key, fmt('%d', H + i * R), fmt('%d', H + (i + n) * R - 1))
        if #chunk ~= n * R then corrupt(key, 'length does not match the capacity') end
        chunk_lo, off = i, 0
      end
      local a, c = sunpack(RFMT, chunk, off + 1)
      return a + base_t, c + base_c
    end
  end

  -- The first i in [lo, hi) with pred(i), or hi; pred is monotone. Gallops from lo, because what a
  -- call looks for is nearly always among the oldest live records.
  local function first(lo, hi, pred)
    local step, probe = 1, lo
    while probe < hi and not pred(probe) do
      lo = probe + 1
      probe = probe + step
      step = step * 2
    end
    if probe < hi then hi = probe end
    while lo < hi do
      local mid = (lo + hi - (lo + hi) % 2) / 2
      if pred(mid) then hi = mid else lo = mid + 1 end
    end
    return lo
  end

  -- Evict, first under the window of the previous call, then under this one.
  local changed, dirty = false, exists and last_window ~= window
  if exists then
    local w = last_window < window and last_window or window
    if head_at + w <= now then
      records()
      local lo = first(head + 1, count, function(i) return rec(i) + w > now end)
      local _, c = rec(lo - 1)
      if c <= evicted or c > last_c or (lo == count) ~= (c == last_c) then
        corrupt(key, 'records out of order')
      end
      evicted = c
      head = lo
      if lo < count then
        local at = rec(lo)
        if at < head_at or at > last_at then corrupt(key, 'records out of order') end
        head_at = at
      end
      changed = true
    end
  end
  if head == count then newest, last_c = false, evicted end
  local used = last_c - evicted
  local ok = used + cost <= max_n
  local refused = not exists and not may_create
  local add = ok and not refused
  local ttl_lost = false
  local started = false

  -- Rewrites the string to hold only the live records, with room for `newcap`, rebased when asked.
  local function rewrite(newcap, rebase_t, rebase_c)
    local live = count - head
    local body = ''
    if live > 0 then
      if newest then
        local n = redis.call('SETRANGE', key, fmt('%d', H + (count - 1) * R),
          spack(RFMT, last_at - base_t, last_c - base_c))
        if n ~= length then corrupt(key, 'length does not match the capacity') end
      end
      body = redis.call('GETRANGE', key, fmt('%d', H + head * R),
        fmt('%d', H + count * R - 1))
      if #body ~= live * R then corrupt(key, 'length does not match the capacity') end
      if rebase_t then
        local parts = {}
        for i = 0, live - 1 do
          local a, c = sunpack(RFMT, body, i * R + 1)
          parts[#parts + 1] = spack(RFMT, a + base_t - rebase_t, c + base_c - rebase_c)
        end
        body = table.concat(parts)
      end
    end
    if rebase_t then base_t, base_c = rebase_t, rebase_c end
    redis.call('SET', key, string.rep('\0', H) .. body .. string.rep('\0', (newcap - live) * R))
    head, count, cap = 0, live, newcap
    chunk, chunk_lo = '', 0
    length = H + cap * R
    ttl_lost = true
    changed = true
  end

  if changed and head < count and cap > 64 and (count - head) * 4 < cap then
    -- Give memory back once live records fill under a quarter of the string.
    rewrite(math.max(4, (count - head) * 2))
  end
  if add then
    -- Log `cost` at now: join the newest entry within its tick of this window (or when the clock
    -- stepped back), taking the later time; else start an entry.
    local at, merge = now, false
    if newest and now <= tick_end(last_at, window) then
      merge = true
      if last_at > now then at = last_at end
    end
    local newc = last_c + cost
    if newest and (at - base_t >= LIMIT48 or newc - base_c >= LIMIT48) then
      rewrite(math.max(cap, count - head + 4), head_at, evicted)
    end
    if merge then
      if head == count - 1 then head_at = at end
    else
      -- (A new key was written on the hot path: here the log exists.)
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
      if newest then
        local n = redis.call('SETRANGE', key, fmt('%d', H + (count - 1) * R),
          spack(RFMT, last_at - base_t, last_c - base_c))
        if n ~= length then corrupt(key, 'length does not match the capacity') end
      end
      count = count + 1
      started = true
    end
    newest = true
    last_at, last_c = at, newc
    used = newc - evicted
  end

  local reset = now
  if head < count then reset = head_at + window end
  local retry = -1
  if not ok then
    -- Earliest time at which `cost` more fits: the expiry of the first entry whose departure
    -- brings the count down to max - cost.
    local need = last_c + cost - max_n
    retry = now
    if need > evicted then
      if not rec then records() end
      local lo = first(head, count, function(i)
        local _, c = rec(i)
        return c >= need
      end)
      if lo < count then
        local at = rec(lo) + window
        if at > now then retry = at end
      end
    end
  end

  if exists then
    if head == count then
      redis.call('DEL', key)
    elseif add or changed or dirty then
      local n = redis.call('SETRANGE', key, '0', spack(HFMT, 'TGWL', 1, head, count, cap, base_t,
        base_c, evicted, head_at, last_at, last_c, window,
        checksum(head, count, cap, base_t, base_c, evicted, head_at, last_at, last_c, window)))
      if n ~= length then corrupt(key, 'length does not match the capacity') end
      -- The expiry moves with a new entry, a new window or a rewrite (SET clears it); a merge
      -- into the newest entry under the same window leaves it where it was.
      if started or dirty or ttl_lost then redis.call('PEXPIREAT', key, fmt('%d', expiry_ms(last_at, window))) end
    elseif redis.call('STRLEN', key) ~= length then
      corrupt(key, 'length does not match the capacity')
    end
  end
  local remaining = max_n - used
  if remaining < 0 then remaining = 0 end
  local flags = (add and 1 or 0) + (refused and 2 or 0) + (ok and 4 or 0)
    + ((add and not exists) and 8 or 0)
  return spack(REPLY, now, flags, remaining, reset, retry, used)
end

local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
else
  now = ARGV[2] + 0
end
local n = #KEYS
if n == 1 then
  -- Not a tail call: Lua 5.1's tail call copies the callee's whole frame (~1,200 instructions).
  local r = one(KEYS[1], ARGV[1], 1, now)
  return r
end
local out, msgs = {}, {}
for i = 1, n do
  local ok, r = pcall(one, KEYS[i], ARGV[1], 34 * i - 33, now)
  if not ok or type(r) ~= 'string' then
    local msg = type(r) == 'table' and r.err or tostring(r)
    msgs[#msgs + 1] = msg
    r = struct.pack('<dddddd', now, 16, #msg, 0, -1, 0)
  end
  out[i] = r
end
return table.concat(out) .. table.concat(msgs)
