"""The atomic claim on an intent: two keeper processes never submit the same intent.

One Redis key per intent, ``<prefix>:claim:<intent_id>``, holds ``phase|owner|token``:

- ``claimed|owner|token``   taken by ``owner`` (SET with an expiry; the token comes from INCR on
                            ``<prefix>:claim:fence``, so it only ever grows: a fencing token);
- ``submitted|owner|token`` the owner is about to send it (set only by the current holder);
- ``done|outcome|token``    its outcome is in the log; kept for ``done_ttl_ms`` so a lagging
                            process that reads the intent later acks it without submitting.

``take`` succeeds when the key is absent (never claimed, or the holder died and the claim
expired) or held by the same ``owner`` (a process restarted under its stable consumer name takes
its own claims back at once). ``mark_submitted`` succeeds only for the holder of the token: a
process whose claim expired while it was slow is fenced out and does not submit. If a claim
expires while its POST is in flight, the next holder resubmits under the same idempotency key
and the venue answers 409: still one acceptance.
"""

from __future__ import annotations

from typing import NamedTuple

import redis.asyncio as aioredis
import redis.exceptions

from keeper.errors import LogUnavailable

_TAKE = """
local cur = redis.call('GET', KEYS[1])
local prev = ''
if cur then
  prev = cur
  local phase, owner = string.match(cur, '^([^|]*)|([^|]*)|')
  if phase == 'done' then return {0, cur} end
  if owner ~= ARGV[1] then return {-1, cur} end
end
local token = redis.call('INCR', KEYS[2])
local phase = 'claimed'
if ARGV[3] == 'submit' then
  phase = 'submitted'
elseif ARGV[3] == 'expire' and string.sub(prev, 1, 10) == 'submitted|' then
  phase = 'submitted'
end
redis.call('SET', KEYS[1], phase .. '|' .. ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return {token, prev, phase}
"""

_MARK = """
if redis.call('GET', KEYS[1]) ~= 'claimed|' .. ARGV[1] .. '|' .. ARGV[2] then return 0 end
redis.call('SET', KEYS[1], 'submitted|' .. ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return 1
"""


class Claim(NamedTuple):
    """The answer of ``take``: ``token`` > 0 on success (then ``previous`` is the phase the key
    was in: ``""``, ``claimed`` or ``submitted``, the latter meaning a submission may already
    have reached the venue, and ``phase`` the phase it is in now); 0 when the intent is done;
    -1 when another owner holds it."""

    token: int
    previous: str
    phase: str = ""

    @property
    def ok(self) -> bool:
        return self.token > 0

    @property
    def done(self) -> bool:
        return self.token == 0


class Claims:
    """Claims on intents in one Redis (one shard: every key shares ``prefix``)."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "keeper", ttl_ms: int = 30_000,
                 done_ttl_ms: int = 7 * 24 * 3600 * 1000) -> None:
        self._r = client
        self._prefix = prefix
        self.ttl_ms = ttl_ms
        self.done_ttl_ms = done_ttl_ms
        self._take = client.register_script(_TAKE)
        self._mark = client.register_script(_MARK)

    def key(self, intent_id: str) -> str:
        return f"{self._prefix}:claim:{intent_id}"

    async def take(self, intent_id: str, owner: str, then: str = "hold") -> Claim:
        """Claim ``intent_id`` for ``owner``, in one atomic step.

        ``then`` says what the claim becomes: ``hold`` (phase ``claimed``; call
        ``mark_submitted`` before sending), ``submit`` (phase ``submitted`` at once: one round
        trip less; a crash before the send then means a resubmission, never an expiry) or
        ``expire`` (``claimed`` unless it was ``submitted`` before, which it stays: an intent
        that may have reached the venue is not expired).
        """
        try:
            res = await self._take(keys=[self.key(intent_id), f"{self._prefix}:claim:fence"],
                                   args=[owner, self.ttl_ms, then])
        except redis.exceptions.RedisError as exc:
            raise LogUnavailable(f"claim {intent_id}: {exc}") from exc
        token, prev = res[0], res[1]
        text = prev.decode() if isinstance(prev, bytes) else str(prev)
        phase = res[2].decode() if len(res) > 2 and isinstance(res[2], bytes) else ""
        return Claim(int(token), text.split("|", 1)[0] if text else "", phase)

    async def mark_submitted(self, intent_id: str, owner: str, token: int) -> bool:
        """True when ``owner`` still holds ``token`` (and the claim now says ``submitted``)."""
        try:
            ok = await self._mark(keys=[self.key(intent_id)], args=[owner, token, self.ttl_ms])
        except redis.exceptions.RedisError as exc:
            raise LogUnavailable(f"claim {intent_id}: {exc}") from exc
        return bool(ok)

    async def finish(self, intent_id: str, outcome: str, token: int) -> None:
        """Mark the intent done (its outcome is in the log)."""
        try:
            await self._r.set(self.key(intent_id), f"done|{outcome}|{token}", px=self.done_ttl_ms)
        except redis.exceptions.RedisError as exc:
            raise LogUnavailable(f"claim {intent_id}: {exc}") from exc

    async def state(self, intent_id: str) -> str | None:
        """The raw claim value (tests and the admin view)."""
        raw = await self._r.get(self.key(intent_id))
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))
