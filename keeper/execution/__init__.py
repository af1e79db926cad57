"""Executors (paper, HTTP, the reference venue's client) and the runner that drives them.

The runner is the executor role: it takes recorded intents from the log, claims each one
atomically, records ``LiquidationSubmitted``, submits, and records the outcome. See
``docs/keeper.md`` for the exactly-once argument.
"""

from keeper.execution.base import Backoff, Submission, VenueExecutor, jittered_backoff, no_delay
from keeper.execution.http import HttpExecutor, sign
from keeper.execution.paper import PaperExecutor
from keeper.execution.simvenue import SimVenueExecutor

__all__ = [
    "Backoff",
    "HttpExecutor",
    "PaperExecutor",
    "SimVenueExecutor",
    "Submission",
    "VenueExecutor",
    "jittered_backoff",
    "no_delay",
    "sign",
]
