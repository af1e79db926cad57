"""The pairs a decoded NDJSON chunk yields, in one compiled pass (``keeper/_compiled.py``): every
replay and rebuild from an export runs it over every line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

from keeper.domain.events import Event

__all__ = ["current_pairs"]

_astuple: Final[Callable[[Any], tuple[Any, ...]]] = msgspec.structs.astuple


def current_pairs(lines: list[Any], current: int) -> list[tuple[str, Event]] | None:
    """``(id, event)`` for each decoded line (``.id``, ``.e``), or None as soon as one event is not
    at version ``current`` (the chunk is then upcast line by line)."""
    out: list[Any] = []  # items appended as they come (a typed list would unbox each pair)
    astuple = _astuple
    for ln in lines:
        pair: Any = astuple(ln)  # (id, event): the line's two fields in one call, as the pair
        e: Event = pair[1]
        if e.v != current:
            return None
        out.append(pair)
    return out
