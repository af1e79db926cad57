"""The server-side Lua scripts of the log. Each runs atomically on one shard's keys.

All keys of a shard share the ``{shard}`` hash tag, so they live in one Redis Cluster slot and a
script may touch them together.
"""

from __future__ import annotations

import hashlib

APPEND = """
-- KEYS[1] = log stream, KEYS[2] = set of event ids already in the log
-- ARGV = event_id_1 .. event_id_n, payload_1 .. payload_n (ids first, then payloads, so the
-- ids go to SMISMEMBER/SADD with unpack and no per-event table building)
-- Returns one entry id per event, or false for a duplicate (already in the log or earlier in
-- this batch). Everything runs in one script, so the batch is atomic. Per chunk of 1000 (Lua's
-- unpack limit): SMISMEMBER (the state before), then one SADD of the whole chunk; when SADD
-- added every id, none was known and none repeats in the chunk, so each event is XADDed with
-- no further check (the common case: one redis.call per event). Otherwise the SMISMEMBER
-- answer and a table of ids seen in this chunk pick the new ones (a later chunk sees earlier
-- chunks' ids through SMISMEMBER).
local n = #ARGV / 2
local out = {}
local call = redis.call
local key, idk = KEYS[1], KEYS[2]
for c = 1, n, 1000 do
  local last = math.min(c + 999, n)
  local known = call('SMISMEMBER', idk, unpack(ARGV, c, last))
  local added = call('SADD', idk, unpack(ARGV, c, last))
  if added == last - c + 1 then
    for k = c, last do out[k] = call('XADD', key, '*', 'e', ARGV[n + k]) end
  else
    local seen = {}
    for k = c, last do
      local id = ARGV[k]
      if known[k - c + 1] == 0 and not seen[id] then
        seen[id] = true
        out[k] = call('XADD', key, '*', 'e', ARGV[n + k])
      else
        out[k] = false
      end
    end
  end
end
return out
"""

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


def sha1(source: str) -> str:
    """The SHA1 Redis names a script by (EVALSHA)."""
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
