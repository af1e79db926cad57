"""The log's duplicate index, bounded: the ids of a time window, and sequenced sources' marks.

Keys of one shard (in the ``{shard}`` hash slot, each named in the append script's KEYS)::

    {prefix}:{shard}:ids   set of the event ids of the entries of the dedup window
    {prefix}:{shard}:seq   hash: sequenced source prefix -> contiguous high-water mark

An append (``scripts.APPEND``, one call per batch) drops an id that is in ``ids`` or repeated
earlier in the same call, and a sequenced id at or below its source's mark; it adds the others.
Retention (``keeper.store.retention``) takes ids out of ``ids`` as their entries leave the
window: each pass reads the entries older than ``dedup_window_s`` (W) by their entry id's time
(the log's clock) since the last pass, from the hot log or the archive, and removes their event
ids; before that it raises the sequenced marks. ``ids`` holds the ids of the last W plus one
retention interval; its name is the one the unbounded index had, so a log written before keeps
its index and retention works through it from the start.

Guarantee (the window): **an event is dropped as a duplicate when its earlier copy was appended
less than W before** (by the log's own clock: entry ids), since that copy's id stays in ``ids``
until a retention pass runs at least W after it. What that means per kind of event:

- prices (``<source>:<symbol>:<publish time>``, ``fixed:``, ``stale:``/``recovered-``): a
  feed repeats a quote only when it reconnects, within seconds. ``fixed:<symbol>:<price>`` is
  recorded again by a daemon that starts more than W after the last copy (the same price, a
  newer ``ts_event``: harmless).
- intents (``liq:<account>/<bucket>@<trigger entry id>``): derived again only when a projector
  replays its tail after its snapshot; trimming waits for snapshots, so that tail is in the hot
  log, and the two copies are the snapshot interval plus the downtime apart. A keeper that
  crashed and restarts more than W later may record such an intent twice: the executor's claim
  (``done`` for 7 days) still submits it once, and ``replay --verify`` shows the second copy.
- outcomes (``out:<intent>``) and submissions (``sub:<intent>#<token>``): a second outcome
  needs a second claim, which the executor refuses while the first is kept (7 days), and the
  window covers W on top.
- venue account events with sequenced ids (``SEQUENCED_SOURCES``: the reference venue's
  ``sim-<n>``): dropped when n is at or below the source's **contiguous high-water mark** C
  (every id ``sim-1`` .. ``sim-C`` has been appended), **for ever**, whatever W: an account
  stream that replays the venue's whole history on each reconnect appends nothing twice.
  Retention raises C through the ids that ``ids`` holds before it removes any. C stops at a gap
  (an id never appended); above it only the window holds. A source whose numbering does not
  start at 1 (a keeper that joined the venue late) has no mark: the window only.
- other venue ids: the window (a venue's reconnecting stream replays recent events).
- chain logs and frames (``evm:<chain>:<block hash>:<log index>``, ``blk:...``): the ingest is
  its own high-water mark (it resumes after the last recorded frame, and reads a block again
  only after a crash inside a backfill, within seconds); the window covers that re-read.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MAX_SEQ_DIGITS", "SEQUENCED_SOURCES", "DedupIndex", "sequence_of"]

SEQUENCED_SOURCES: tuple[str, ...] = ("sim-",)
"""Id prefixes of sources numbered 1, 2, 3, ... in order (the reference venue's ``sim-<n>``)."""
MAX_SEQ_DIGITS = 15
"""Sequence numbers stay exact in Lua's doubles below 2^53."""


def sequence_of(event_id: str, prefixes: Sequence[str]) -> tuple[str, int] | None:
    """``(prefix, n)`` for an id ``<prefix><n>`` of a sequenced source (n a positive integer
    written without leading zeros), else None."""
    for p in prefixes:
        if event_id.startswith(p):
            rest = event_id[len(p):]
            if rest.isdigit() and rest.isascii() and rest[0] != "0" and len(rest) <= MAX_SEQ_DIGITS:
                return p, int(rest)
    return None


class DedupIndex:
    """The keys and script arguments of one shard's duplicate index (the module docstring)."""

    def __init__(self, tag: str, *, sequenced: Sequence[str] = SEQUENCED_SOURCES) -> None:
        self.ids_key = f"{tag}:ids"
        self.seq_key = f"{tag}:seq"
        self.sequenced = tuple(sequenced)

    def sequenced_args(self, event_ids: Sequence[str]) -> list[str | bytes]:
        """``[m, (index, prefix, n) * m]`` for the ids of sequenced sources (index from 1)."""
        prefixes = self.sequenced
        if not prefixes:
            return ["0"]
        # one scan of the joined ids first: most batches (prices) hold no sequenced id
        joined = "\n" + "\n".join(event_ids)
        if not any("\n" + p in joined for p in prefixes):
            return ["0"]
        out: list[str | bytes] = []
        for k, eid in enumerate(event_ids, 1):
            if eid.startswith(prefixes):
                found = sequence_of(eid, prefixes)
                if found is not None:
                    out += [str(k), found[0], str(found[1])]
        return [str(len(out) // 3), *out]
