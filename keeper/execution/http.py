"""Submit liquidations to a venue over HTTP (aiohttp), idempotently under the intent id.

Wire contract (the reference venue in ``keeper.sim`` speaks it):

- ``POST <url>`` with body ``msgspec.json.encode(decision)``, headers ``Idempotency-Key:
  <intent_id>`` and ``X-Keeper-Signature: hex(hmac_sha256(secret, body))``;
- 2xx: accepted -> ``Submission(ref, duplicate=False, ...)``;
- 409: the venue has this intent already -> ``Submission(ref, duplicate=True, ...)`` (the
  earlier submission is the one that counts: it is confirmed, not resubmitted);
- any other 4xx: ``PermanentError`` carrying the venue's ``reason``;
- 5xx, timeouts, connection errors: ``TransientError``; ``execute`` retries them under the same
  id with the injected backoff, up to ``max_attempts``.

One ``aiohttp.ClientSession`` per process: pass the process's session in; when none is given the
executor opens one and closes it in ``close()``. Every request has an explicit timeout (aiohttp's
default total is 300 s). The secret comes from the environment (``KEEPER_VENUE_SECRET``) unless
given explicitly; it is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import aiohttp
import msgspec
import structlog

from keeper.domain.codec import decode
from keeper.domain.events import Decision, Event
from keeper.errors import ConfigError, DecodeError, PermanentError, TransientError
from keeper.execution.base import Backoff, Submission, jittered_backoff, submit_with_retries

SECRET_ENV = "KEEPER_VENUE_SECRET"  # noqa: S105 - the variable's name, not a secret
_log = structlog.get_logger()
_encoder = msgspec.json.Encoder()


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Keeper-Signature`` of a body: hex HMAC-SHA256."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def secret_from_env(env: str = SECRET_ENV) -> bytes:
    """The signing secret from the environment; ``ConfigError`` naming the variable if unset."""
    value = os.environ.get(env)
    if not value:
        raise ConfigError(f"{env} is not set: the HTTP executor signs every request with it")
    return value.encode()


class HttpExecutor:
    """POSTs decisions to ``url``. Safe to share between tasks of one event loop."""

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        secret: bytes | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 2.0,
        backoff: Backoff | None = None,
        max_attempts: int = 5,
    ) -> None:
        self.url = url
        self._secret = secret if secret is not None else secret_from_env()
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 1.0))
        self._backoff = backoff or jittered_backoff()
        self._max_attempts = max_attempts
        self.attempts = 0
        """Requests sent so far (every try, retries included): for metrics and tests."""

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def post_once(self, decision: Decision) -> Submission:
        """One request, no retry: classify the answer (see the module docstring)."""
        body = _encoder.encode(decision)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": decision.intent_id,
            "X-Keeper-Signature": sign(self._secret, body),
        }
        self.attempts += 1
        try:
            async with self._client().post(self.url, data=body, headers=headers,
                                           timeout=self._timeout) as resp:
                status = resp.status
                raw = await resp.read()
        except TimeoutError as exc:
            raise TransientError(f"timeout after {self._timeout.total}s") from exc
        except aiohttp.ClientError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        payload = _json_object(raw)
        if status >= 500:
            raise TransientError(f"venue status {status}: {payload.get('reason', '')}".strip())
        if status == 409:
            return Submission(_ref(payload), True, self.parse_events(payload))
        if 200 <= status < 300:
            return Submission(_ref(payload), False, self.parse_events(payload))
        reason = str(payload.get("reason") or raw[:200].decode(errors="replace") or f"status {status}")
        raise PermanentError(reason)

    def parse_events(self, payload: dict[str, Any]) -> list[Event]:
        """Account events in the answer; a plain venue returns none (``SimVenueExecutor`` does)."""
        return []

    async def execute(self, decision: Decision) -> Submission:
        """Submit with retries of transient failures under the same idempotency key."""

        def on_retry(attempt: int, exc: TransientError) -> None:
            _log.info("submit_retry", intent_id=decision.intent_id, attempt=attempt, error=str(exc))

        return await submit_with_retries(lambda: self.post_once(decision), self._backoff,
                                         self._max_attempts, on_retry)

    async def submit(self, decision: Decision) -> tuple[str | None, bool]:
        """``keeper.ports.Executor``: the venue's reference and whether it was a duplicate."""
        result = await self.execute(decision)
        return result.ref, result.duplicate

    async def close(self) -> None:
        """Close the session if this executor opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None


def _json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _ref(payload: dict[str, Any]) -> str | None:
    ref = payload.get("ref")
    return None if ref is None else str(ref)


def decode_events(items: list[Any]) -> list[Event]:
    """Decode the venue's event payloads (JSON objects or JSON strings); bad ones are skipped
    and logged: the venue's own account stream carries the same events anyway."""
    out: list[Event] = []
    for item in items:
        data = item.encode() if isinstance(item, str) else _encoder.encode(item)
        try:
            out.append(decode(data))
        except DecodeError as exc:
            _log.warning("venue_event_undecodable", reason=exc.reason, detail=exc.detail)
    return out
