"""The reference venue's injected faults (``POST /faults`` in ``PROTOCOL.md``): what is set, and
the decisions that follow from it for each trading request.

``Faults`` is the settable state and its counters (what ``/faults`` and ``/stats`` show);
``FaultInjector`` owns it with the seeded random draws and the rate-limit window, and answers,
for one request, whether it is rate-limited, answered with a 5xx, or has its reply lost. No
HTTP here: the server (``keeper.sim.server``) turns each answer into a response.

Contract: every injected fault is counted in ``Faults`` (``injected_*``); a spec is checked as a
whole before anything is set (``spec_error``); the same ``seed`` gives the same share-based
draws.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

__all__ = ["FAULT_KEYS", "FaultInjector", "Faults", "spec_error"]

FAULT_KEYS = {"http_5xx": int, "status_5xx": int, "delay_ms": int, "timeout_next": int, "hang_ms": int,
              "drop_next": int, "drop_share": float, "hang_share": float, "seed": int, "rate_limit": int,
              "rate_limit_next": int, "retry_after": int, "retry_after_5xx": bool, "drop_ws": bool,
              "halt": list, "resume": list, "clear": bool}
"""Every key a fault spec may hold, with the type of its value."""
_SETTABLE = ("http_5xx", "status_5xx", "delay_ms", "timeout_next", "hang_ms", "drop_next", "drop_share",
             "hang_share", "rate_limit", "rate_limit_next", "retry_after", "retry_after_5xx")


class Faults(msgspec.Struct):
    """Injected faults and their counters; see ``POST /faults`` in PROTOCOL.md."""

    http_5xx: int = 0
    status_5xx: int = 503
    delay_ms: int = 0
    timeout_next: int = 0
    hang_ms: int = 10_000
    drop_next: int = 0
    drop_share: float = 0.0
    hang_share: float = 0.0
    rate_limit: int = 0
    rate_limit_next: int = 0
    retry_after: int = 1
    retry_after_5xx: bool = False
    injected_5xx: int = 0
    injected_timeouts: int = 0
    injected_drops: int = 0
    injected_429: int = 0
    late_refused: int = 0
    ws_drops: int = 0


def spec_error(spec: Mapping[str, Any]) -> str | None:
    """Why a fault spec is refused (an unknown key, a value of the wrong type), or None."""
    for k, v in spec.items():
        want = FAULT_KEYS.get(k)
        if want is None:
            return f"unknown fault key {k}"
        if not _valid_fault(want, v):
            return f"bad value for {k}: {v!r}"
    return None


def _valid_fault(want: type, v: Any) -> bool:
    """A fault value of the key's type: a non-negative int, a share in [0, 1], a bool, a list."""
    if want is bool or want is list:
        return isinstance(v, want)
    if isinstance(v, bool) or not isinstance(v, int | float) or (want is int and not isinstance(v, int)):
        return False
    return 0 <= v <= 1 if want is float else v >= 0


class FaultInjector:
    """The faults in force and the draws they need; one asyncio loop owns it."""

    def __init__(self) -> None:
        self.faults = Faults()
        self._rng = random.Random(0)
        self._recent: deque[float] = deque()
        """Monotonic times of the trading requests of the last second (the ``rate_limit`` window)."""

    def configure(self, spec: Mapping[str, Any]) -> None:
        """Apply a checked spec's ``clear``, ``seed`` and settable keys (the venue's halts and
        websocket drops are the server's)."""
        f = self.faults
        if spec.get("clear"):
            f.http_5xx = f.delay_ms = f.timeout_next = f.drop_next = f.rate_limit = f.rate_limit_next = 0
            f.drop_share = f.hang_share = 0.0
        if "seed" in spec:
            self._rng = random.Random(spec["seed"])
        for k in _SETTABLE:
            if k in spec:
                setattr(f, k, float(spec[k]) if FAULT_KEYS[k] is float else spec[k])

    def rate_limited(self) -> bool:
        """Whether this trading request gets the injected 429 (counted); else it joins the window."""
        f = self.faults
        if f.rate_limit_next > 0:
            f.rate_limit_next -= 1
        elif f.rate_limit > 0:
            now = time.monotonic()
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            if len(self._recent) < f.rate_limit:
                self._recent.append(now)
                return False
        else:
            return False
        f.injected_429 += 1
        return True

    def take_5xx(self) -> bool:
        """Whether this trading request is answered with the injected 5xx (counted)."""
        f = self.faults
        if f.http_5xx > 0:
            f.http_5xx -= 1
            f.injected_5xx += 1
            return True
        return False

    def lost_reply(self) -> Literal["drop", "hang"] | None:
        """How the reply of an applied request is lost (counted): ``drop`` (the connection is
        cut), ``hang`` (held for ``hang_ms``), or None (it goes out)."""
        f = self.faults
        if f.drop_next > 0 or (f.drop_share > 0 and self._rng.random() < f.drop_share):
            f.drop_next = max(0, f.drop_next - 1)
            f.injected_drops += 1
            return "drop"
        if f.timeout_next > 0 or (f.hang_share > 0 and self._rng.random() < f.hang_share):
            f.timeout_next = max(0, f.timeout_next - 1)
            f.injected_timeouts += 1
            return "hang"
        return None
