"""The client for the reference venue (``keeper.sim``): the HTTP executor plus the venue's
resulting account events, its ``/stats`` and ``/markets``.

The venue answers an accepted (or duplicate) liquidation with the account events it produced.
They carry the same ``event_id``s as the venue's own account stream, so the runner appends them
to the log *before* the ``LiquidationConfirmed`` outcome: whichever path lands first wins and the
log's dedup drops the other. That ordering means a confirmed outcome is never in the log before
the balances it changed. A status answer (``GET /liquidations/{id}``, accepted) carries the same
events as the 409 duplicate answer and is parsed the same way.
"""

from __future__ import annotations

from typing import Any

import msgspec

from keeper.domain.events import Event
from keeper.execution.http import HttpExecutor, decode_events

__all__ = ["SimVenueExecutor"]


class SimVenueExecutor(HttpExecutor):
    """``base_url`` is the venue's root (``http://127.0.0.1:PORT``)."""

    name = "simvenue"

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        self.base_url = base_url.rstrip("/")
        kwargs.setdefault("batch_url", f"{self.base_url}/liquidations/batch")
        super().__init__(f"{self.base_url}/liquidations", **kwargs)

    def parse_events(self, payload: dict[str, Any]) -> list[Event]:
        items = payload.get("events") or []
        return decode_events(items if isinstance(items, list) else [])

    async def stats(self) -> dict[str, Any]:
        """The venue's ``GET /stats`` (``accepted_by_intent`` counts, ...)."""
        return await self._get_json("/stats")

    async def markets(self) -> dict[str, Any]:
        """The venue's ``GET /markets``: each market's mark and whether it is halted."""
        return await self._get_json("/markets")

    async def _get_json(self, path: str) -> dict[str, Any]:
        async with self._client().get(f"{self.base_url}{path}", timeout=self._timeout) as resp:
            resp.raise_for_status()
            obj = msgspec.json.decode(await resp.read())
        return obj if isinstance(obj, dict) else {}
