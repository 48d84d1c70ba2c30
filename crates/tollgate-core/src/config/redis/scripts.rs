//! The Lua scripts behind the Redis configuration layout (see the module docs of `super`).
//!
//! Versions are decimal strings no larger than 2^53 - 1 (`MAX_VERSION`), so `tonumber` holds
//! them exactly and `%.0f` writes them back without an exponent.

/// A change to some records. KEYS: meta, tenants, tenant-versions, stream, staging (only read
/// when ARGV[4] is `staged`). ARGV: expected version, global flag (`1`/`0`), global JSON,
/// `inline`/`staged`, channel, stream max length, stream tenant list (ids joined by `\n`, or
/// empty with `all` meaning "reload everything"), then for `inline`: tenant id, record JSON (empty
/// = remove) pairs.
///
/// When the stored version is the expected one nothing else was written meanwhile. When it is
/// higher, another writer got in first; the change still goes in if none of the records it
/// touches changed after the version it was built on (per-tenant compare-and-set), so writers to
/// different tenants never conflict. Staged (bulk) changes are checked against the version only.
/// Replies `{0, stored}` on a conflict, `{2, stored}` when the version is at its maximum, and
/// `{1, new version, stream entry id}` when stored.
pub const COMMIT: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'version') or '0'
local exp = ARGV[1]
if cur ~= exp then
  if cur == '0' or ARGV[4] ~= 'inline' then return {'0', cur} end
  local e = tonumber(exp)
  if tonumber(cur) < e then return {'0', cur} end
  if tonumber(redis.call('HGET', KEYS[1], 'floor') or '0') > e then return {'0', cur} end
  if ARGV[2] == '1' and tonumber(redis.call('HGET', KEYS[1], 'global_version') or '0') > e then
    return {'0', cur}
  end
  for i = 8, #ARGV, 2 do
    local tv = redis.call('HGET', KEYS[3], ARGV[i])
    if tv and tonumber(tv) > e then return {'0', cur} end
  end
end
local n = tonumber(cur)
if n >= 9007199254740991 then return {'2', cur} end
local new = string.format('%.0f', n + 1)
local function put(tid, rec)
  if rec == '' then redis.call('HDEL', KEYS[2], tid) else redis.call('HSET', KEYS[2], tid, rec) end
  redis.call('HSET', KEYS[3], tid, new)
end
if ARGV[4] == 'inline' then
  for i = 8, #ARGV, 2 do put(ARGV[i], ARGV[i + 1]) end
else
  local c = '0'
  repeat
    local r = redis.call('HSCAN', KEYS[5], c, 'COUNT', 1000)
    c = r[1]
    for i = 1, #r[2], 2 do put(r[2][i], r[2][i + 1]) end
  until c == '0'
  redis.call('DEL', KEYS[5])
end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'global', ARGV[3], 'global_version', new)
end
redis.call('HSET', KEYS[1], 'version', new)
local id
if ARGV[7] == 'all' then
  id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'v', new, 'p', cur, 'all', '1')
else
  id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*', 'v', new, 'p', cur, 'g', ARGV[2], 't', ARGV[7])
end
redis.call('PUBLISH', ARGV[5], new)
return {'1', new, id}
"#;

/// Replaces the whole configuration (a whole-document save, and a change touching more than
/// `STAGED_APPLY_MAX` tenants). KEYS: meta, tenants, tenant-versions, stream, staging (the new
/// tenant records, written beforehand; may not exist when there are none). ARGV: expected
/// version, new version, global JSON, channel, stream max length. O(1) in the number of tenants.
///
/// The per-tenant versions are dropped; `floor` (the version of this replacement) stands in for
/// all of them, so a writer that built on an older version conflicts whatever tenant it touches.
pub const SAVE: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'version') or '0'
if cur ~= ARGV[1] then return {'0', cur} end
-- UNLINK: the old records are freed in the background, not while every client waits.
redis.call('UNLINK', KEYS[2], KEYS[3])
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('RENAME', KEYS[5], KEYS[2])
  redis.call('PERSIST', KEYS[2])
end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'global', ARGV[3], 'global_version', ARGV[2], 'floor', ARGV[2])
local id = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'v', ARGV[2], 'p', cur, 'all', '1')
redis.call('PUBLISH', ARGV[4], ARGV[2])
return {'1', ARGV[2], id}
"#;

/// Where a full load starts: KEYS: meta, stream. Replies `{version or '', global or '', id of the
/// newest stream entry or '0-0'}`, read together so the load can catch up from exactly there.
pub const HEAD: &str = r#"
local m = redis.call('HMGET', KEYS[1], 'version', 'global')
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {m[1] or '', m[2] or '', id}
"#;

/// What changed since a version this instance holds. KEYS: meta, tenants, stream. ARGV: the
/// stream id read up to, the version held, the most entries to follow.
///
/// Replies `{'none'}` (nothing stored), `{'same', v}`, `{'gap', v}` (entries missing: trimmed,
/// Redis lost data, a whole replacement, or too many to follow; reload everything), or
/// `{'delta', v, last id, global JSON or '', tenant id, record JSON or '' (removed), ...}` with
/// the current record of every tenant changed since, read at the same moment as the version.
pub const DELTA: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'version')
if not cur then return {'none'} end
if cur == ARGV[2] then return {'same', cur} end
local max = tonumber(ARGV[3])
local entries = redis.call('XRANGE', KEYS[3], '(' .. ARGV[1], '+', 'COUNT', max + 1)
if #entries == 0 or #entries > max then return {'gap', cur} end
local expect = ARGV[2]
local global = false
local seen = {}
local tids = {}
for _, e in ipairs(entries) do
  local f = {}
  for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
  if f['p'] ~= expect or f['all'] == '1' then return {'gap', cur} end
  expect = f['v']
  if f['g'] == '1' then global = true end
  for tid in string.gmatch(f['t'] or '', '[^\n]+') do
    if not seen[tid] then
      seen[tid] = true
      tids[#tids + 1] = tid
    end
  end
end
if expect ~= cur then return {'gap', cur} end
local g = ''
if global then g = redis.call('HGET', KEYS[1], 'global') or '' end
local out = {'delta', cur, entries[#entries][1], g}
for _, tid in ipairs(tids) do
  out[#out + 1] = tid
  out[#out + 1] = redis.call('HGET', KEYS[2], tid) or ''
end
return out
"#;
