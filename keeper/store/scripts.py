"""The server-side Lua scripts of the log. Each runs atomically on one shard's keys.

All keys of a shard share the ``{shard}`` hash tag, so they live in one Redis Cluster slot and a
script may touch them together.
"""

from __future__ import annotations

APPEND = """
-- KEYS[1] = log stream, KEYS[2] = set of event ids already in the log
-- ARGV = event_id_1, payload_1, event_id_2, payload_2, ...
-- Returns one entry id per event, or false for a duplicate (already in the log or earlier in
-- this batch). The check (SMISMEMBER), the XADDs and the marking (SADD) run in one script, so
-- the batch is atomic; the set is read and written in bulk (chunks of 1000 to stay inside
-- Lua's unpack limit), leaving one redis.call per event: its XADD.
local n = #ARGV / 2
local out, seen, new = {}, {}, {}
for c = 1, n, 1000 do
  local ids = {}
  for k = c, math.min(c + 999, n) do ids[#ids + 1] = ARGV[2 * k - 1] end
  local known = redis.call('SMISMEMBER', KEYS[2], unpack(ids))
  for j = 1, #ids do
    local k = c + j - 1
    local id = ids[j]
    if known[j] == 0 and not seen[id] then
      seen[id] = true
      new[#new + 1] = id
      out[k] = redis.call('XADD', KEYS[1], '*', 'e', ARGV[2 * k])
    else
      out[k] = false
    end
  end
end
for c = 1, #new, 1000 do
  redis.call('SADD', KEYS[2], unpack(new, c, math.min(c + 999, #new)))
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
