"""The atomic claim on an intent: two keeper processes never submit the same intent.

One Redis key per intent, ``<prefix>:claim:<intent_id>``, holds ``phase|owner|token`` (the
key layout: see *Keys* below):

- ``claimed|owner|token``   taken by ``owner`` (SET with an expiry; the token comes from INCR on
                            ``<prefix>:claim:fence``, so it only ever grows: a fencing token);
- ``submitted|owner|token`` the owner is about to send it (set only by the current holder);
- ``done|outcome|token``    its outcome is in the log; kept for ``done_ttl_ms`` so a lagging
                            process that reads the intent later acks it without submitting.

Beside it, ``<prefix>:sent:<intent_id>`` is the **sent mark**: set in the same atomic step as
any move to ``submitted`` (so before any send), it outlives the claim's short expiry. The
guarantee: from the moment an intent is first marked ``submitted`` until its outcome is recorded
(``finish`` deletes the mark with the same transaction that writes ``done``), or for
``sent_ttl_ms`` (default 7 days, as ``done``), ``take`` reports ``sent`` and, in ``expire``
mode, keeps the intent in phase ``submitted``, even after the claim itself lapsed. An intent
that may have reached the venue is thus never mistaken for one that never left (the claim's
expiry used to erase exactly that).

``take`` succeeds when the key is absent (never claimed, or the holder died and the claim
expired) or held by the same ``owner`` (a process restarted under its stable consumer name takes
its own claims back at once). ``mark_submitted`` succeeds only for the holder of the token: a
process whose claim expired while it was slow is fenced out and does not submit. If a claim
expires while its POST is in flight, the next holder resubmits under the same idempotency key
and the venue answers 409: still one acceptance.

Keys. ``Claims(client)`` (one Redis, no ``shard``) keeps the keys it always had::

    <prefix>:claim:<intent_id>   <prefix>:sent:<intent_id>   <prefix>:claim:fence

so claims and sent marks written before an upgrade are still found. ``Claims(client,
shard="3")`` puts them under the shard's hash tag, in the slot of the shard's log and lease::

    <prefix>:{3}:claim:<intent_id>   <prefix>:{3}:sent:<intent_id>   <prefix>:{3}:claim:fence

Every script touches a claim, its sent mark and the fence together, so on a Redis Cluster
(``RedisCluster`` client) the shard is required: without it the keys would fall in three slots
(CROSSSLOT), and ``Claims`` refuses with that reason. Two layouts are two sets of claims: a
deployment moving from the first to the second must do it with no intent in flight (or keep
``shard=None`` on one Redis). The claim's token (``<prefix>:...:claim:fence``) is a token of
the claim, not of the shard's lease (``keeper.store.leases``): the two fence different things.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
import redis.exceptions

from keeper.errors import LogError, LogUnavailable
from keeper.store.slotconn import RedisClient

__all__ = ["Claim", "Claims"]

_TAKE = """
local cur = redis.call('GET', KEYS[1])
local prev = ''
if cur then
  prev = cur
  local phase, owner = string.match(cur, '^([^|]*)|([^|]*)|')
  if phase == 'done' then return {0, cur} end
  if owner ~= ARGV[1] then return {-1, cur} end
end
local sent = string.sub(prev, 1, 10) == 'submitted|' or redis.call('EXISTS', KEYS[3]) == 1
local token = redis.call('INCR', KEYS[2])
local phase = 'claimed'
if ARGV[3] == 'submit' or (ARGV[3] == 'expire' and sent) then
  phase = 'submitted'
end
redis.call('SET', KEYS[1], phase .. '|' .. ARGV[1] .. '|' .. token, 'PX', ARGV[2])
if phase == 'submitted' then
  redis.call('SET', KEYS[3], ARGV[1] .. '|' .. token, 'PX', ARGV[4])
end
return {token, prev, phase, sent and 1 or 0}
"""

_TAKE_MANY = """
-- KEYS = claim_1, sent_1, ..., claim_n, sent_n, fence; ARGV = owner, ttl_ms, then, sent_ttl_ms
-- _TAKE for each intent in one atomic step; returns {token, prev, phase, sent} per intent
local out = {}
local fence = KEYS[#KEYS]
for i = 1, #KEYS - 1, 2 do
  local cur = redis.call('GET', KEYS[i])
  local prev = ''
  local res = nil
  if cur then
    prev = cur
    local phase, owner = string.match(cur, '^([^|]*)|([^|]*)|')
    if phase == 'done' then res = {0, cur, '', 0}
    elseif owner ~= ARGV[1] then res = {-1, cur, '', 0} end
  end
  if not res then
    local sent = string.sub(prev, 1, 10) == 'submitted|' or redis.call('EXISTS', KEYS[i + 1]) == 1
    local token = redis.call('INCR', fence)
    local phase = 'claimed'
    if ARGV[3] == 'submit' or (ARGV[3] == 'expire' and sent) then
      phase = 'submitted'
    end
    redis.call('SET', KEYS[i], phase .. '|' .. ARGV[1] .. '|' .. token, 'PX', ARGV[2])
    if phase == 'submitted' then
      redis.call('SET', KEYS[i + 1], ARGV[1] .. '|' .. token, 'PX', ARGV[4])
    end
    res = {token, prev, phase, sent and 1 or 0}
  end
  out[#out + 1] = res
end
return out
"""

_MARK = """
if redis.call('GET', KEYS[1]) ~= 'claimed|' .. ARGV[1] .. '|' .. ARGV[2] then return 0 end
redis.call('SET', KEYS[1], 'submitted|' .. ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[4])
return 1
"""

_FINISH = """
-- KEYS = claim_1, sent_1, ..., claim_n, sent_n; ARGV = done_ttl_ms, value_1 .. value_n
-- Each claim becomes its 'done|outcome|token' value and its sent mark goes, all in one step
-- (a script rather than MULTI: the same on one Redis and in a cluster's slot).
for i = 1, #KEYS, 2 do
  redis.call('SET', KEYS[i], ARGV[1 + (i + 1) / 2], 'PX', ARGV[1])
  redis.call('DEL', KEYS[i + 1])
end
return #KEYS / 2
"""


class Claim(NamedTuple):
    """The answer of ``take``: ``token`` > 0 on success (then ``previous`` is the phase the key
    was in: ``""``, ``claimed`` or ``submitted``, the latter meaning a submission may already
    have reached the venue, and ``phase`` the phase it is in now); 0 when the intent is done;
    -1 when another owner holds it. ``sent``: the intent had been marked ``submitted`` before
    this take (by the sent mark, which outlives a lapsed claim): a send may have reached the
    venue."""

    token: int
    previous: str
    phase: str = ""
    sent: bool = False

    @property
    def ok(self) -> bool:
        return self.token > 0

    @property
    def done(self) -> bool:
        return self.token == 0


def _claim(res: Any) -> Claim:
    """A script's ``{token, prev, phase, sent}`` as a ``Claim``."""
    token, prev = res[0], res[1]
    text = prev.decode() if isinstance(prev, bytes) else str(prev)
    phase = res[2].decode() if len(res) > 2 and isinstance(res[2], bytes) else ""
    sent = len(res) > 3 and int(res[3]) == 1
    return Claim(int(token), text.split("|", 1)[0] if text else "", phase, sent)


class Claims:
    """Claims on the intents of one shard (see the module docstring for the keys)."""

    def __init__(self, client: RedisClient, *, prefix: str = "keeper", shard: str | None = None,
                 ttl_ms: int = 30_000, done_ttl_ms: int = 7 * 24 * 3600 * 1000,
                 sent_ttl_ms: int | None = None) -> None:
        if shard is None and not isinstance(client, aioredis.Redis):
            # its scripts take a claim, the fence and the sent mark together: keys in three slots
            raise LogError("claims on a Redis Cluster need the shard (Claims(client, shard=...)): "
                           "their keys must share the shard's hash tag")
        self._r = client
        self.shard = shard
        self._prefix = prefix if shard is None else f"{prefix}:{{{shard}}}"
        self.ttl_ms = ttl_ms
        self.done_ttl_ms = done_ttl_ms
        self.sent_ttl_ms = done_ttl_ms if sent_ttl_ms is None else sent_ttl_ms
        self._take = client.register_script(_TAKE)
        self._mark = client.register_script(_MARK)
        self._take_many = client.register_script(_TAKE_MANY)
        self._finish = client.register_script(_FINISH)

    async def prepare(self) -> None:
        """Load the scripts before the first claim (which would otherwise pay a NOSCRIPT round
        trip and a script load: ~3 ms with a new connection), in concurrent calls that leave
        spare connections in the client's pool beside a blocking reader's."""
        scripts = (self._take, self._mark, self._take_many)
        try:
            await asyncio.gather(*(self._r.script_load(s.script) for s in scripts))
        except redis.exceptions.RedisError as exc:
            raise LogUnavailable(f"claim scripts: {exc}") from exc

    def key(self, intent_id: str) -> str:
        return f"{self._prefix}:claim:{intent_id}"

    @property
    def fence_key(self) -> str:
        """The counter the claims' tokens come from."""
        return f"{self._prefix}:claim:fence"

    def sent_key(self, intent_id: str) -> str:
        """The sent mark's key (see the module docstring)."""
        return f"{self._prefix}:sent:{intent_id}"

    async def take(self, intent_id: str, owner: str, then: str = "hold") -> Claim:
        """Claim ``intent_id`` for ``owner``, in one atomic step.

        ``then`` says what the claim becomes: ``hold`` (phase ``claimed``; call
        ``mark_submitted`` before sending), ``submit`` (phase ``submitted`` at once: one round
        trip less; a crash before the send then means a resubmission, never an expiry) or
        ``expire`` (``claimed`` unless it was ever ``submitted``, claim lapsed or not, which it
        then is again: an intent that may have reached the venue is not expired unasked). Any
        move to ``submitted`` also sets the sent mark.
        """
        try:
            res = await self._take(keys=[self.key(intent_id), self.fence_key,
                                         self.sent_key(intent_id)],
                                   args=[owner, self.ttl_ms, then, self.sent_ttl_ms])
        except redis.exceptions.RedisError as exc:
            raise LogUnavailable(f"claim {intent_id}: {exc}") from exc
        return _claim(res)

    async def take_many(self, intent_ids: Sequence[str], owner: str, then: str = "hold") -> list[Claim]:
        """``take`` for several intents in one atomic step (one round trip for a burst): the
        same answer per intent, in order."""
        if not intent_ids:
            return []
        keys = [k for i in intent_ids for k in (self.key(i), self.sent_key(i))]
        try:
            res = await self._take_many(keys=[*keys, self.fence_key],
                                        args=[owner, self.ttl_ms, then, self.sent_ttl_ms])
        except redis.exceptions.RedisError as exc:
            raise LogUnavailable(f"claim {len(intent_ids)} intents: {exc}") from exc
        return [_claim(r) for r in res]

    async def mark_submitted(self, intent_id: str, owner: str, token: int) -> bool:
        """True when ``owner`` still holds ``token`` (and the claim now says ``submitted``)."""
        try:
            ok = await self._mark(keys=[self.key(intent_id), self.sent_key(intent_id)],
                                  args=[owner, token, self.ttl_ms, self.sent_ttl_ms])
        except redis.exceptions.RedisError as exc:
            raise LogUnavailable(f"claim {intent_id}: {exc}") from exc
        return bool(ok)

    async def finish(self, intent_id: str, outcome: str, token: int) -> None:
        """Mark the intent done (its outcome is in the log) and drop its sent mark, in one
        atomic step."""
        try:
            await self._finish(keys=[self.key(intent_id), self.sent_key(intent_id)],
                               args=[self.done_ttl_ms, f"done|{outcome}|{token}"])
        except redis.exceptions.RedisError as exc:
            raise LogUnavailable(f"claim {intent_id}: {exc}") from exc

    async def finish_many(self, done: Sequence[tuple[str, str, int]]) -> None:
        """``finish`` for several ``(intent_id, outcome, token)`` in one atomic step."""
        if not done:
            return
        keys = [k for intent_id, _, _ in done for k in (self.key(intent_id), self.sent_key(intent_id))]
        try:
            await self._finish(keys=keys, args=[self.done_ttl_ms,
                                                *(f"done|{o}|{t}" for _, o, t in done)])
        except redis.exceptions.RedisError as exc:
            raise LogUnavailable(f"claim {len(done)} intents: {exc}") from exc

    async def state(self, intent_id: str) -> str | None:
        """The raw claim value (tests and the admin view)."""
        raw = await self._r.get(self.key(intent_id))
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))

    async def sent(self, intent_id: str) -> bool:
        """Whether the sent mark is set (tests and the admin view)."""
        try:
            return bool(await self._r.exists(self.sent_key(intent_id)))
        except redis.exceptions.RedisError as exc:
            raise LogUnavailable(f"claim {intent_id}: {exc}") from exc
