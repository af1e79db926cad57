"""The collector and a loaded book: the objects of a daemon's state are long-lived.

A full collection walks every tracked object: with a 100,000-account book loaded, 37-43 ms
(``docs/performance.md``), a pause that would land in the middle of a crash. ``settle_heap``
runs once the book is loaded (the daemon's projectors caught up, a shard taken over): one
collection, then ``gc.freeze()``, which moves every object alive to a generation the collector
never walks. Objects created later are collected as usual; reference counting still frees a
frozen object whose last reference goes.
"""

from __future__ import annotations

import gc

import structlog

__all__ = ["settle_heap"]

_log = structlog.get_logger()


def settle_heap(why: str) -> int:
    """Collect, then freeze every object alive; returns how many are frozen now (all calls)."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    _log.info("heap_frozen", why=why, frozen=frozen)
    return frozen
