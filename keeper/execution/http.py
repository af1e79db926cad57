"""Submit liquidations to a venue over HTTP (aiohttp), idempotently under the intent id.

Wire contract (the reference venue in ``keeper.sim`` speaks it):

- ``POST <url>`` with body ``msgspec.json.encode(decision)``, headers ``Idempotency-Key:
  <intent_id>``, ``X-Keeper-Signature: hex(hmac_sha256(secret, body))`` and
  ``X-Keeper-Deadline: <unix ms>`` (when this request's own timeout ends: a venue that honours
  it never applies the request after the client has given up on it);
- 2xx: accepted -> ``Submission(ref, duplicate=False, ...)``;
- 409: the venue has this intent already -> ``Submission(ref, duplicate=True, ...)`` (the
  earlier submission is the one that counts: it is confirmed, not resubmitted);
- 429, and 503 with ``Retry-After`` (seconds or an HTTP-date): ``RetryLater``; 408 (the
  deadline passed before the venue's turn: not applied), other 5xx, timeouts, connection
  errors: ``TransientError``; ``execute`` retries both under the same id by the rule of
  ``keeper.execution.base.submit_with_retries`` (a ``Retry-After`` is waited out, at least, and
  is not one of the ``max_attempts`` quick attempts; the whole call ends within ``deadline_s``,
  20 s by default);
- any other 4xx: ``PermanentError`` carrying the venue's ``reason``.

``execute_many(decisions)`` sends several at once where the venue has a batch endpoint
(``batch_url``; the reference venue's ``POST /liquidations/batch``: a signed JSON array of
decisions, each under its own intent id, answered with every item's result in order), in
requests of ``batch_size``; else one ``execute`` each, concurrently.

``status(intent_id)`` asks what the venue holds under a key: ``GET <status_url>`` (default
``<url>/{intent_id}``; a ``{intent_id}`` placeholder is replaced by the percent-encoded id, a URL
without one gets ``/<id>`` appended) with ``X-Keeper-Signature: hex(hmac_sha256(secret,
"status:<intent_id>"))``. 2xx with ``"status": "accepted"``: the ``Submission`` (duplicate); 404
with ``"status": "unknown"``: None; 405, 501 or a 404 without that body (a venue without the
endpoint: never read as "not there") is ``StatusUnsupported``; anything else is
``TransientError``, retried like a submission.

``keep_warm(stop)`` keeps a connection to the venue open through a calm: when no request has
used the session for ``keep_warm_s`` (below aiohttp's 15 s keep-alive), ``HEAD <url>`` on each
of ``keep_warm_connections`` connections at once (any answer will do: what is kept is the
connection; several, for the requests a crash sends at once to a venue without a batch
endpoint). A crash's first submission then leaves on an open connection instead of waiting for a
connect (a round trip; with TLS, several). Its first call also asks ``HEAD <batch_url>``: a venue
without a batch endpoint (404 or 501) is found out before the first liquidation, not by it.

One ``aiohttp.ClientSession`` per process: pass the process's session in; when none is given the
executor opens one and closes it in ``close()``. Every request has an explicit timeout (aiohttp's
default total is 300 s). The secret comes from the environment (``KEEPER_VENUE_SECRET``) unless
given explicitly; it is never logged.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec
import structlog

from keeper.aio import wait_event
from keeper.backoff import Backoff, jittered_backoff
from keeper.domain.codec import decode
from keeper.domain.events import Decision, Event
from keeper.errors import ConfigError, DecodeError, ExecutionError, PermanentError, TransientError
from keeper.execution.base import (
    RetryLater,
    Sleep,
    StatusUnsupported,
    Submission,
    submit_with_retries,
)

__all__ = [
    "SECRET_ENV",
    "BatchUnsupported",
    "HttpExecutor",
    "decode_events",
    "parse_retry_after",
    "secret_from_env",
    "sign",
    "status_message",
]

SECRET_ENV = "KEEPER_VENUE_SECRET"  # noqa: S105 - the variable's name, not a secret
_log = structlog.get_logger()
_encoder = msgspec.json.Encoder()
T = TypeVar("T")


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Keeper-Signature`` of a body: hex HMAC-SHA256."""
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def status_message(intent_id: str) -> bytes:
    """What a status request signs: ``status:<intent_id>`` (UTF-8)."""
    return f"status:{intent_id}".encode()


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds (``"3"``; a decimal is
    accepted) or an HTTP-date (counted from ``now_s``, unix seconds; a past date is 0). None
    when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP-date is GMT even when the zone is left out
            return None
        return max(0.0, when.timestamp() - now_s)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def secret_from_env(env: str = SECRET_ENV) -> bytes:
    """The signing secret from the environment; ``ConfigError`` naming the variable if unset."""
    value = os.environ.get(env)
    if not value:
        raise ConfigError(f"{env} is not set: the HTTP executor signs every request with it")
    return value.encode()


class HttpExecutor:
    """POSTs decisions to ``url``. Safe to share between tasks of one event loop.

    ``retry_after_max_s``, ``deadline_s``, ``sleep`` and ``clock`` (monotonic) feed the retry
    rule of ``submit_with_retries``; ``wall`` (unix seconds) dates ``X-Keeper-Deadline`` and
    reads an HTTP-date ``Retry-After``.
    """

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
        status_url: str | None = None,
        batch_url: str | None = None,
        batch_size: int = 100,
        retry_after_max_s: float = 5.0,
        deadline_s: float = 20.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        keep_warm_s: float = 10.0,
        keep_warm_connections: int = 4,
    ) -> None:
        self.url = url
        self.keep_warm_s = keep_warm_s
        self.keep_warm_connections = keep_warm_connections
        template = status_url or url.rstrip("/")
        self.status_url = template if "{intent_id}" in template else f"{template.rstrip('/')}/{{intent_id}}"
        self.batch_url = batch_url
        """Where several decisions go in one request (``execute_many``); None: the venue has no
        batch endpoint."""
        self.batch_size = batch_size
        self.retry_after_max_s = retry_after_max_s
        self.deadline_s = deadline_s
        self._sleep = sleep
        self._clock = clock
        self._wall = wall
        self._secret = secret if secret is not None else secret_from_env()
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, 1.0))
        self._backoff = backoff or jittered_backoff()
        self._max_attempts = max_attempts
        self.attempts = 0
        """Requests sent so far (every try, retries included): for metrics and tests."""
        self.status_queries = 0
        """Status requests sent so far (every try)."""
        self.warmups = 0
        """``HEAD`` requests ``warm`` sent (answered or not)."""
        self._last_used = -math.inf
        """When (``clock``) a request last ended on the session."""
        self._batch_probed = False
        """Whether ``warm`` has asked about the batch endpoint."""

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def post_once(self, decision: Decision) -> Submission:
        """One request, no retry: classify the answer (see the module docstring)."""
        body = _encoder.encode(decision)
        total = self._timeout.total or 0.0
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": decision.intent_id,
            "X-Keeper-Signature": sign(self._secret, body),
            "X-Keeper-Deadline": str(math.ceil((self._wall() + total) * 1000)),
        }
        self.attempts += 1
        status, raw, after = await self._request("POST", self.url, headers, body)
        payload = _json_object(raw)
        self._raise_transient(status, payload, after)
        if status == 409:
            return Submission(_ref(payload), True, self.parse_events(payload))
        if 200 <= status < 300:
            return Submission(_ref(payload), False, self.parse_events(payload))
        reason = str(payload.get("reason") or raw[:200].decode(errors="replace") or f"status {status}")
        raise PermanentError(reason)

    async def _request(self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
                       ) -> tuple[int, bytes, str | None]:
        """One request: its status, body and ``Retry-After``; network failures are transient."""
        try:
            async with self._client().request(method, url, data=body, headers=headers,
                                              timeout=self._timeout) as resp:
                return resp.status, await resp.read(), resp.headers.get("Retry-After")
        except TimeoutError as exc:
            raise TransientError(f"timeout after {self._timeout.total}s") from exc
        except aiohttp.ClientError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self._last_used = self._clock()

    async def warm(self) -> bool:
        """Open (or keep) ``keep_warm_connections`` connections to the venue: as many ``HEAD
        <url>`` at once, whatever they answer; whether the venue answered them all. The first
        answered call also asks ``HEAD <batch_url>``: a 404 or 501 there means no batch
        endpoint (found now, not by the first liquidation's request); any other answer leaves
        it to be tried."""
        self.warmups += 1
        try:
            # at once, so that each takes (or opens) its own connection
            await asyncio.gather(*(self._request("HEAD", self.url, {})
                                   for _ in range(max(1, self.keep_warm_connections))))
            if self.batch_url is not None and not self._batch_probed:
                self._batch_probed = True
                status, _, _ = await self._request("HEAD", self.batch_url, {})
                if status in (404, 501):
                    _log.warning("batch_endpoint_unsupported", error=(
                        f"venue has no batch endpoint at {self.batch_url}: HEAD status {status}"))
                    self.batch_url = None
        except TransientError as exc:
            _log.debug("venue_warmup_failed", error=str(exc)[:200])
            return False
        return True

    async def keep_warm(self, stop: asyncio.Event) -> None:
        """Until ``stop``: ``warm`` at once, then whenever no request has used the session for
        ``keep_warm_s`` (0 or less: never)."""
        if self.keep_warm_s <= 0:
            return
        await self.warm()
        while not stop.is_set():
            idle = self._clock() - self._last_used
            if idle >= self.keep_warm_s:
                await self.warm()
                continue
            await wait_event(stop, self.keep_warm_s - idle)

    def _raise_transient(self, status: int, payload: dict[str, Any], retry_after: str | None) -> None:
        """Raise for the answers worth retrying: 429, 408 and 5xx (``RetryLater`` when a 429 or
        503 says when)."""
        if status not in (408, 429) and status < 500:
            return
        what = f"venue status {status}: {payload.get('reason', '')}".strip().rstrip(":")
        wait = parse_retry_after(retry_after, self._wall()) if status in (429, 503) else None
        if wait is not None:
            raise RetryLater(f"{what} (retry after {wait:g}s)", wait)
        raise TransientError(what)

    async def status_once(self, intent_id: str) -> Submission | None:
        """One status request, no retry: classify the answer (see the module docstring)."""
        url = self.status_url.replace("{intent_id}", quote(intent_id, safe=""))
        headers = {"X-Keeper-Signature": sign(self._secret, status_message(intent_id))}
        self.status_queries += 1
        status, raw, after = await self._request("GET", url, headers)
        payload = _json_object(raw)
        self._raise_transient(status, payload, after)
        if 200 <= status < 300 and payload.get("status") == "accepted":
            return Submission(_ref(payload), True, self.parse_events(payload))
        if status == 404 and payload.get("status") == "unknown":
            return None
        detail = f"status {status} {payload.get('reason') or raw[:200].decode(errors='replace')}".strip()
        if status in (404, 405, 501):
            raise StatusUnsupported(f"venue has no status answer: {detail}")
        raise TransientError(f"venue cannot tell: {detail}")

    async def status(self, intent_id: str) -> Submission | None:
        """What the venue holds under ``intent_id`` (``StatusExecutor``), with the retries of
        ``execute``; ``TransientError`` when it cannot tell."""

        def on_retry(attempt: int, exc: TransientError) -> None:
            _log.info("status_retry", intent_id=intent_id, attempt=attempt, error=str(exc))

        return await self._with_retries(lambda: self.status_once(intent_id), on_retry)

    def parse_events(self, payload: dict[str, Any]) -> list[Event]:
        """Account events in the answer; a plain venue returns none (``SimVenueExecutor`` does)."""
        return []

    async def execute(self, decision: Decision) -> Submission:
        """Submit with retries of transient failures under the same idempotency key."""

        def on_retry(attempt: int, exc: TransientError) -> None:
            _log.info("submit_retry", intent_id=decision.intent_id, attempt=attempt, error=str(exc))

        return await self._with_retries(lambda: self.post_once(decision), on_retry)

    async def _with_retries(self, call: Callable[[], Awaitable[T]],
                            on_retry: Callable[[int, TransientError], None]) -> T:
        return await submit_with_retries(call, self._backoff, self._max_attempts, on_retry,
                                         retry_after_max_s=self.retry_after_max_s,
                                         deadline_s=self.deadline_s, attempt_s=self._timeout.total or 0.0,
                                         sleep=self._sleep, clock=self._clock)

    async def post_batch_once(self, decisions: Sequence[Decision]) -> list[Submission | ExecutionError]:
        """One ``POST <batch_url>`` of several decisions, no retry: each item's answer (a
        ``Submission``, or the ``PermanentError`` of its rejection). A transient answer of the
        whole request raises, as ``post_once``; so does an answer that does not list every item
        in order (``TransientError``: retried under the same keys, which the venue's per-item
        idempotency makes safe)."""
        assert self.batch_url is not None
        body = _encoder.encode(list(decisions))
        total = self._timeout.total or 0.0
        headers = {
            "Content-Type": "application/json",
            "X-Keeper-Signature": sign(self._secret, body),
            "X-Keeper-Deadline": str(math.ceil((self._wall() + total) * 1000)),
        }
        self.attempts += 1
        status, raw, after = await self._request("POST", self.batch_url, headers, body)
        payload = _json_object(raw)
        self._raise_transient(status, payload, after)
        if status in (404, 405, 501):
            raise BatchUnsupported(f"venue has no batch endpoint at {self.batch_url}: status {status}")
        if not 200 <= status < 300:
            reason = str(payload.get("reason") or raw[:200].decode(errors="replace") or f"status {status}")
            return [PermanentError(reason) for _ in decisions]
        items = payload.get("results")
        if not isinstance(items, list) or len(items) != len(decisions) or any(
                not isinstance(i, dict) or i.get("intent_id") != d.intent_id
                for i, d in zip(items, decisions, strict=False)):
            raise TransientError("venue batch answer does not list every item in order")
        out: list[Submission | ExecutionError] = []
        for item in items:
            r = item.get("result")
            r = r if isinstance(r, dict) else {}
            kind = r.get("status")
            if kind in ("accepted", "duplicate"):
                out.append(Submission(_ref(r), kind == "duplicate", self.parse_events(r)))
            elif kind == "rejected":
                out.append(PermanentError(str(r.get("reason") or "rejected")))
            else:
                out.append(TransientError(f"venue batch item status {kind!r}"))
        return out

    async def execute_many(self, decisions: Sequence[Decision]) -> list[Submission | ExecutionError]:
        """Submit several decisions: one request per ``batch_size`` of them where the venue has a
        batch endpoint (``batch_url``), retried as a whole like ``execute``; else one
        ``execute`` each, concurrently. Each item's answer in order: a ``Submission``, or the
        ``PermanentError`` / ``TransientError`` it ended with (never raised)."""
        if self.batch_url is None:
            return await self._one_by_one(decisions)
        chunks = [list(decisions[k:k + self.batch_size])
                  for k in range(0, len(decisions), self.batch_size)]

        async def one(chunk: list[Decision]) -> list[Submission | ExecutionError]:
            def on_retry(attempt: int, exc: TransientError) -> None:
                _log.info("submit_batch_retry", items=len(chunk), attempt=attempt, error=str(exc))

            try:
                return await self._with_retries(lambda: self.post_batch_once(chunk), on_retry)
            except BatchUnsupported as exc:  # sent one by one from now on
                if self.batch_url is not None:
                    _log.warning("batch_endpoint_unsupported", error=str(exc))
                self.batch_url = None
                return await self._one_by_one(chunk)
            except TransientError as exc:
                return [exc for _ in chunk]

        done = await asyncio.gather(*(one(c) for c in chunks))
        return [r for part in done for r in part]

    async def _one_by_one(self, decisions: Sequence[Decision]) -> list[Submission | ExecutionError]:
        got = await asyncio.gather(*(self.execute(d) for d in decisions), return_exceptions=True)
        return [_item(g) for g in got]

    async def submit(self, decision: Decision) -> tuple[str | None, bool]:
        """``keeper.ports.Executor``: the venue's reference and whether it was a duplicate."""
        result = await self.execute(decision)
        return result.ref, result.duplicate

    async def close(self) -> None:
        """Close the session if this executor opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None


class BatchUnsupported(PermanentError):
    """The venue answered the batch endpoint with 404, 405 or 501: it has none (nothing was
    applied); ``execute_many`` sends one by one from then on."""


def _item(got: Submission | BaseException) -> Submission | ExecutionError:
    """One ``execute`` result of a gather: the submission or its execution error (anything else
    is a bug and is raised)."""
    if isinstance(got, Submission | ExecutionError):
        return got
    raise got


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
