"""Executors (paper, HTTP, the reference venue's client) and the runner that drives them.

The runner is the executor role: it takes recorded intents from the log, claims each one
atomically, records ``LiquidationSubmitted``, submits, and records the outcome. See
``docs/keeper.md`` for the exactly-once argument. Their retry policies are
``keeper.backoff.Backoff``s.
"""

from keeper.execution.base import (
    RetryLater,
    StatusExecutor,
    StatusUnsupported,
    Submission,
    VenueExecutor,
    status_of,
)
from keeper.execution.http import HttpExecutor, parse_retry_after, sign
from keeper.execution.paper import PaperExecutor
from keeper.execution.simvenue import SimVenueExecutor

__all__ = [
    "HttpExecutor",
    "PaperExecutor",
    "RetryLater",
    "SimVenueExecutor",
    "StatusExecutor",
    "StatusUnsupported",
    "Submission",
    "VenueExecutor",
    "parse_retry_after",
    "sign",
    "status_of",
]
