"""The one exception tree of the keeper.

::

    KeeperError
    ├── ConfigError            bad or unknown configuration key (names the key)
    ├── ScenarioError          a malformed `keeper health` scenario (names the field)
    ├── EventError             an event that cannot be accepted
    │   ├── DecodeError        bytes that are not a known, valid, current event
    │   └── InvalidPrice       NaN, infinite, zero, negative or absurd price
    ├── LogError               the event log (Redis) failed or is unreachable
    │   ├── LogUnavailable     the log cannot be reached or cannot take it now: waited out
    │   │   ├── LogRefused     Redis refused a write (OOM at maxmemory, READONLY, MISCONF)
    │   │   └── LogNotReplicated  an append's WAIT saw too few replicas in time: append again
    │   └── LeaseLost          a fenced write refused: the shard's lease is gone or re-granted
    ├── SnapshotError          a snapshot failed validation (skipped, never trusted)
    ├── ExecutionError         an executor failed to submit
    │   ├── TransientError     worth retrying under the same intent id
    │   └── PermanentError     the venue refused; retrying will not help
    └── EmbeddedRedisError     the private redis-server could not be found or started

Third-party errors (redis-py, aiohttp, websockets) are caught at the adapter that calls them
and re-raised as one of these, with the original chained as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "EmbeddedRedisError",
    "EventError",
    "ExecutionError",
    "InvalidPrice",
    "KeeperError",
    "LeaseLost",
    "LogError",
    "LogNotReplicated",
    "LogRefused",
    "LogUnavailable",
    "PermanentError",
    "ScenarioError",
    "SnapshotError",
    "TransientError",
]


class KeeperError(Exception):
    """Root of every error the keeper raises on purpose."""


class ConfigError(KeeperError):
    """Configuration is invalid; the message names the key."""


class ScenarioError(KeeperError):
    """A scenario file is malformed; the message names the field."""


class EventError(KeeperError):
    """An event cannot be accepted."""


class DecodeError(EventError):
    """Bytes that are not a known, valid event of a supported version.

    ``reason`` is a short machine-friendly code (``bad_json``, ``unknown_type``,
    ``unknown_version``, ``invalid_field``, ``missing_field``, ``invalid_price``).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class InvalidPrice(EventError):
    """A price that must never reach a liquidation decision."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class LogError(KeeperError):
    """The event log failed."""


class LogUnavailable(LogError):
    """The event log cannot be reached, or cannot take the command now (``LOADING``, ``BUSY``,
    a failover in progress): a fault outside the process, waited out with backoff."""


class LogRefused(LogUnavailable):
    """Redis refused a write it will take again later: ``OOM`` (``maxmemory`` reached with
    ``noeviction``), ``READONLY`` (a replica, mid-failover), ``MISCONF`` (it cannot persist).
    Nothing of the refused command was applied (a script's batch is all or nothing)."""


class LogNotReplicated(LogUnavailable):
    """An append asked to be on replicas (``wait_replicas``) was not acknowledged by enough of
    them in time. It may be on the primary only: append it again (duplicates are dropped; the
    new WAIT covers it)."""


class LeaseLost(LogError):
    """A write fenced by a shard's lease (``keeper.store.leases``) was refused: the lease has
    expired, was released, or is held under another fencing token (another process took the
    shard over). Nothing of the refused write was applied. Not worth retrying: the process no
    longer owns the shard and must stop acting for it."""


class SnapshotError(KeeperError):
    """A snapshot failed validation."""


class ExecutionError(KeeperError):
    """An executor could not submit an intent."""


class TransientError(ExecutionError):
    """A failure worth retrying under the same intent id (5xx, timeout, connection reset)."""


class PermanentError(ExecutionError):
    """The venue refused the intent; ``reason`` is the venue's own words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EmbeddedRedisError(KeeperError):
    """The private redis-server could not be found or started."""
