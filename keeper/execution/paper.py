"""The paper executor: accepts every decision, submits nothing, remembers what it was given.

Paper *mode* (``KeeperParams.mode == "paper"``) is decided in the core: decisions are recorded
in the log with ``mode="paper"`` and the runner never hands them to any executor. This executor
is for wiring a live-mode keeper with no venue (a dry run of the whole outbox path: claim,
``LiquidationSubmitted``, ``LiquidationConfirmed`` with a ``paper:`` reference) and for tests.
"""

from __future__ import annotations

from keeper.domain.events import Decision
from keeper.execution.base import Submission

__all__ = ["PaperExecutor"]


class PaperExecutor:
    """No I/O. ``submitted`` lists the decisions in submission order; a repeat of an intent id
    answers as a duplicate, as a venue with idempotency keys would."""

    name = "paper"

    def __init__(self) -> None:
        self.submitted: list[Decision] = []
        self._seen: set[str] = set()

    async def execute(self, decision: Decision) -> Submission:
        duplicate = decision.intent_id in self._seen
        if not duplicate:
            self._seen.add(decision.intent_id)
            self.submitted.append(decision)
        return Submission(f"paper:{decision.intent_id}", duplicate, [])

    async def status(self, intent_id: str) -> Submission | None:
        """What this executor was given under ``intent_id`` (``StatusExecutor``)."""
        return Submission(f"paper:{intent_id}", True, []) if intent_id in self._seen else None

    async def submit(self, decision: Decision) -> tuple[str | None, bool]:
        result = await self.execute(decision)
        return result.ref, result.duplicate

    async def close(self) -> None:
        return None
