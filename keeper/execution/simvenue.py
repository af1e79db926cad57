"""The client for the reference venue (``keeper.sim``): the HTTP executor plus the venue's
resulting account events and its ``/stats``.

The venue answers an accepted (or duplicate) liquidation with the account events it produced.
They carry the same ``event_id``s as the venue's own account stream, so the runner appends them
to the log *before* the ``LiquidationConfirmed`` outcome: whichever path lands first wins and the
log's dedup drops the other. That ordering means a confirmed outcome is never in the log before
the balances it changed.
"""

from __future__ import annotations

from typing import Any

import msgspec

from keeper.domain.events import Event
from keeper.execution.http import HttpExecutor, decode_events


class SimVenueExecutor(HttpExecutor):
    """``base_url`` is the venue's root (``http://127.0.0.1:PORT``)."""

    name = "simvenue"

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        self.base_url = base_url.rstrip("/")
        super().__init__(f"{self.base_url}/liquidations", **kwargs)

    def parse_events(self, payload: dict[str, Any]) -> list[Event]:
        items = payload.get("events") or []
        return decode_events(items if isinstance(items, list) else [])

    async def stats(self) -> dict[str, Any]:
        """The venue's ``GET /stats`` (``accepted_by_intent`` counts, ...)."""
        async with self._client().get(f"{self.base_url}/stats", timeout=self._timeout) as resp:
            resp.raise_for_status()
            obj = msgspec.json.decode(await resp.read())
        return obj if isinstance(obj, dict) else {}
