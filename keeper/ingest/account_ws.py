"""The reference venue's account stream (``ws://host/accounts``) as a log source.

Each frame is one event payload in keeper's own codec format (``keeper.domain.codec``) whose
``event_id`` is the venue's own id. On every (re)connect the venue first resends every account's
current state as events with stable ids, then live events; the log drops what it already holds,
so a reconnect appends only what was missed and nothing twice. Frames that do not decode, or
carry an event a venue must not send (the keeper's own decisions and outcomes), are
dead-lettered with their reason; account events are queued in arrival order, never conflated.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from keeper.backoff import Backoff
from keeper.domain.codec import decode
from keeper.domain.events import (
    ACCOUNT_EVENTS,
    AssetListed,
    AssetParamsChanged,
    Event,
    MarketListed,
    MarketParamsChanged,
)
from keeper.errors import DecodeError
from keeper.feeds.ingest import Ingest
from keeper.feeds.pipeline import Reject
from keeper.feeds.ws import WsConfig, WsFeed

__all__ = ["VENUE_EVENTS", "AccountStream"]

log = structlog.get_logger()

VENUE_EVENTS: tuple[type[Event], ...] = (*ACCOUNT_EVENTS, MarketListed, MarketParamsChanged, AssetListed,
                                         AssetParamsChanged)
"""What a venue's account stream may carry by default."""


class AccountStream:
    """Reads the venue's account stream into ``ingest`` until cancelled (``run``)."""

    def __init__(self, url: str, ingest: Ingest, *, source: str = "venue", backoff: Backoff | None = None,
                 accept: Sequence[type[Event]] = VENUE_EVENTS, idle_timeout: float | None = None) -> None:
        self.ingest = ingest
        self.source = source
        self.accept = tuple(accept)
        self.feed = WsFeed(WsConfig(url, idle_timeout=idle_timeout), self._on_frame, backoff=backoff,
                           name=source)

    async def _on_frame(self, raw: bytes | str) -> None:
        payload = raw.encode() if isinstance(raw, str) else raw
        try:
            event = decode(payload)
        except DecodeError as exc:
            log.warning("account_event_rejected", source=self.source, reason=exc.reason)
            await self.ingest.submit_rejects([Reject(self.source, exc.reason, exc.detail, payload)])
            return
        if not isinstance(event, self.accept):
            log.warning("account_event_rejected", source=self.source, reason="unexpected_type",
                        type=type(event).__name__)
            await self.ingest.submit_rejects([Reject(self.source, "unexpected_type", type(event).__name__,
                                                     payload)])
            return
        await self.ingest.submit([event])

    async def run(self, max_connects: int | None = None) -> None:
        await self.feed.run(max_connects)
