"""The server-side Lua scripts of the log. Each runs atomically on one shard's keys.

All keys of a shard share the ``{shard}`` hash tag, so they live in one Redis Cluster slot and a
script may touch them together.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "APPEND",
    "DEAD_LETTER",
    "FENCE",
    "FENCED_APPEND",
    "IMPORT",
    "NTH_ID",
    "RAISE_MARK",
    "SNAPSHOT_SAVE",
    "TRIM",
    "UNLOCK",
    "sha1",
]

APPEND = """
-- KEYS[1] = log stream, KEYS[2] = set of event ids of the dedup window (``keeper.store.dedup``),
-- KEYS[3] = hash: sequenced source prefix -> contiguous high-water mark
-- ARGV[1] = m, then m triples (index in the call, source prefix, sequence number) for the ids of
-- sequenced sources, then event_id_1 .. event_id_n, then payload_1 .. payload_n (ids together,
-- so they go to SMISMEMBER/SADD with unpack and no per-event table building)
-- Returns one entry id per event, or false for a duplicate: an id in the set, or earlier in this
-- call, or a sequenced id at or below its source's high-water mark (such an id is not left in
-- the set). Everything runs in one script, so the batch is atomic. Per chunk of 1000 (Lua's
-- unpack limit): SMISMEMBER (the state before), then one SADD of the whole chunk; when SADD
-- added every id, none was known and none repeats in the chunk, so each event is XADDed with
-- no further check (the common case: one redis.call per event). Otherwise the SMISMEMBER
-- answer and a table of ids seen in this chunk pick the new ones (a later chunk sees earlier
-- chunks' ids through SMISMEMBER).
local call = redis.call
local key, idk = KEYS[1], KEYS[2]
local m = tonumber(ARGV[1])
local base = 1 + 3 * m
local n = (#ARGV - base) / 2
local below = {}
local anybelow = false
if m > 0 then
  local hwm = {}
  for j = 0, m - 1 do
    local src = ARGV[3 + 3 * j]
    local c = hwm[src]
    if c == nil then
      c = tonumber(call('HGET', KEYS[3], src) or '0')
      hwm[src] = c
    end
    if tonumber(ARGV[4 + 3 * j]) <= c then
      below[tonumber(ARGV[2 + 3 * j])] = true
      anybelow = true
    end
  end
end
local out = {}
local pay = base + n
for c = 1, n, 1000 do
  local last = math.min(c + 999, n)
  local known = call('SMISMEMBER', idk, unpack(ARGV, base + c, base + last))
  local added = call('SADD', idk, unpack(ARGV, base + c, base + last))
  if added == last - c + 1 and not anybelow then
    for k = c, last do out[k] = call('XADD', key, '*', 'e', ARGV[pay + k]) end
  else
    local seen = {}
    local drop = {}
    for k = c, last do
      local id = ARGV[base + k]
      if known[k - c + 1] == 1 or seen[id] then
        out[k] = false
      else
        seen[id] = true
        if below[k] then
          out[k] = false
          drop[#drop + 1] = id
        else
          out[k] = call('XADD', key, '*', 'e', ARGV[pay + k])
        end
      end
    end
    if #drop > 0 then call('SREM', idk, unpack(drop)) end
  end
end
return out
"""

FENCE = """
-- The fence of a fenced script (``keeper.store.leases``): KEYS[#KEYS] = the shard's lease key,
-- ARGV[#ARGV] = the grant the write carries ('holder|token'), taken off ARGV here so the rest of
-- the script reads its arguments as unfenced. Unless the lease is that grant (expired, released,
-- re-granted), nothing is written and the script fails with LEASELOST.
local fence_want = table.remove(ARGV)
local fence_cur = redis.call('GET', KEYS[#KEYS])
if fence_cur ~= fence_want then
  return redis.error_reply('LEASELOST ' .. KEYS[#KEYS] .. ' is ' .. (fence_cur or 'free') ..
                           ', the write carried ' .. fence_want)
end
"""

FENCED_APPEND = FENCE + APPEND
"""``APPEND`` behind ``FENCE``: KEYS[4] = the shard's lease key, the last ARGV = the grant."""

IMPORT = """
-- KEYS[1] = log stream, KEYS[2] = id set
-- ARGV = entry_id_1, event_id_1, payload_1, ... (event_id '' for a payload without one)
-- Appends with the given entry ids (XADD refuses an id not above the last one).
local n = 0
for i = 1, #ARGV, 3 do
  redis.call('XADD', KEYS[1], ARGV[i], 'e', ARGV[i + 2])
  if ARGV[i + 1] ~= '' then
    redis.call('SADD', KEYS[2], ARGV[i + 1])
  end
  n = n + 1
end
return n
"""

DEAD_LETTER = """
-- KEYS[1] = dead-letter stream, KEYS[2] = set of refs already dead-lettered
-- ARGV = source, reason, detail, payload, ref ('' = always append)
-- A ref (the log entry id) is dead-lettered once however often the entry is re-read.
if ARGV[5] ~= '' and redis.call('SADD', KEYS[2], ARGV[5]) == 0 then
  return false
end
return redis.call('XADD', KEYS[1], '*', 'source', ARGV[1], 'reason', ARGV[2], 'detail', ARGV[3],
                  'payload', ARGV[4], 'ref', ARGV[5])
"""

SNAPSHOT_SAVE = """
-- KEYS[1] = snapshot hash. ARGV = offset, format, sha256, data
-- The current snapshot becomes the previous one and the new one the current, in one step.
local cur = redis.call('HMGET', KEYS[1], 'offset', 'format', 'sha256', 'data')
if cur[1] then
  redis.call('HSET', KEYS[1], 'prev_offset', cur[1], 'prev_format', cur[2],
             'prev_sha256', cur[3], 'prev_data', cur[4])
end
redis.call('HSET', KEYS[1], 'offset', ARGV[1], 'format', ARGV[2], 'sha256', ARGV[3], 'data', ARGV[4])
return 1
"""


RAISE_MARK = """
-- KEYS[1] = hash of high-water marks. ARGV = field, value: the field becomes value when that is
-- higher (a mark only rises, whoever writes it).
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""

NTH_ID = """
-- KEYS[1] = log stream. ARGV = start ('-' or an exclusive '(id'), count.
-- The id of the count-th entry from start, and how many entries were passed (fewer at the end
-- of the stream): a position found on the server, without sending the entries.
local r = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
if #r == 0 then return {false, 0} end
return {r[#r][1], #r}
"""


TRIM = """
-- KEYS[1] = log stream. ARGV[1] = MINID: entries below it go (XTRIM MINID, exact).
-- Also records the largest id removed as the stream's max-deleted-entry-id (XSETID
-- MAXDELETEDID; XTRIM alone leaves it, only XDEL sets it), so XINFO STREAM tells any reader
-- whether entries after its position were trimmed. Returns the number of entries removed.
local function key(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function above(a, b)
  local am, as = key(a)
  local bm, bs = key(b)
  return am > bm or (am == bm and as > bs)
end
local top = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[1], '-', 'COUNT', 1)
if #top == 0 then return 0 end
local n = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, maxdel
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'max-deleted-entry-id' then maxdel = info[i + 1] end
end
local newmax = top[1][1]
if maxdel and above(maxdel, newmax) then newmax = maxdel end
redis.call('XSETID', KEYS[1], last, 'MAXDELETEDID', newmax)
return n
"""

UNLOCK = """
-- KEYS[1] = lock key. ARGV[1] = the holder's token: the lock is released only by its holder.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def sha1(source: str) -> str:
    """The SHA1 Redis names a script by (EVALSHA)."""
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
