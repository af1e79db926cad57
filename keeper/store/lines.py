"""The pairs a decoded NDJSON chunk yields, in one compiled pass (``keeper/_compiled.py``): every
replay and rebuild from an export runs it over every line."""

from __future__ import annotations

from typing import Any

from keeper.domain.events import Event


def current_pairs(lines: list[Any], current: int) -> list[tuple[str, Event]] | None:
    """``(id, event)`` for each decoded line (``.id``, ``.e``), or None as soon as one event is not
    at version ``current`` (the chunk is then upcast line by line)."""
    out: list[tuple[str, Event]] = []
    for ln in lines:
        e: Event = ln.e
        if e.v != current:
            return None
        out.append((ln.id, e))
    return out
