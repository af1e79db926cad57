"""How much JSON the keeper reads from outside, and how deep it may nest: the limits in one place.

JSON parsers recurse once per level of nesting. msgspec and the standard library both stop at the
interpreter's recursion limit with a ``RecursionError`` (no crash: tested with 1,000,000 nested
``[``), which escapes every ``except ValueError``/``DecodeError`` and ends a command in a traceback;
and a file or a line is read whole into memory before it is parsed. So every JSON document that
comes from a file a person names is checked here first, and a failure is one line naming the
file (and the line, for NDJSON) and the limit.

Where each limit applies:

- ``MAX_DOCUMENT_BYTES`` and ``MAX_DEPTH``: a scenario file (``keeper health``), a run manifest
  beside an export; ``read_capped`` never reads more than the limit (plus one byte).
- ``MAX_LINE_BYTES`` and ``MAX_DEPTH``: each line of an NDJSON export (``keeper log import``
  refuses the file or, with ``--skip-bad``, dead-letters the line; a replay skips and counts it).
- HTTP bodies: aiohttp's ``client_max_size`` (``keeper.app.admin.MAX_BODY``; the sim venue's
  server 1 MiB); websocket frames: ``FeedConfig.max_size`` (4 MiB) in ``keeper.feeds.ws``. Those
  bodies and frames are decoded by msgspec, which raises ``RecursionError`` on deep nesting.
- Log entries read back from Redis are not checked here (the hot path); ``keeper.domain.codec``
  turns a ``RecursionError`` into a ``DecodeError``, so such an entry is dead-lettered.

The checks are pure functions returning why a document is refused (``None``: accepted); each
caller raises its own ``KeeperError`` with the file's name, so the CLI prints it on one line.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_LINE_BYTES",
    "MiB",
    "deeper_than",
    "problem",
    "read_capped",
    "size_text",
]

MiB = 1 << 20

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted. Events nest 3 levels, a scenario 6; 64 leaves
room for hand-written files and stays far below the parsers' recursion limit (~1,000)."""

MAX_DOCUMENT_BYTES = 16 * MiB
"""Largest JSON document read whole (a scenario, a run manifest): ~100x the largest real one."""

MAX_LINE_BYTES = 1 * MiB
"""Largest line of an NDJSON export, newline excluded. One line is one event: a few hundred
bytes, a few KiB for the largest (an intent with its plan)."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
"""A JSON string (escapes included); brackets inside one are text, not nesting."""

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SQUARE = bytes.maketrans(b"{}", b"[]")


def size_text(n: int) -> str:
    """``n`` bytes in words: ``16 MiB``, ``512 KiB``, ``100 bytes``."""
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n:,} bytes"


def deeper_than(data: bytes | str, limit: int = MAX_DEPTH) -> bool:
    """Whether ``data`` nests arrays/objects more than ``limit`` levels deep (strings ignored).

    Linear, in C-speed passes: when the document has at most ``limit`` brackets at all, that
    settles it (every event line, almost every file). Otherwise strings are cut out, only the
    brackets kept, and innermost pairs ``[]`` removed one level per pass, at most ``limit + 1``
    passes. Unbalanced input (not valid JSON, the parser refuses it) counts every unclosed
    bracket as a level, so it is refused here only when a parser could recurse past ``limit``.
    """
    raw = data.encode() if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", raw).translate(_SQUARE, _NOT_BRACKETS)
    levels = 0
    while b"[]" in brackets:
        levels += 1
        if levels > limit:
            return True
        brackets = brackets.replace(b"[]", b"")
    # left: ``]]..[[..`` (unbalanced): the unclosed ones nest on top of the matched levels
    return levels + brackets.count(b"[") > limit


def problem(data: bytes | str, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> str | None:
    """Why ``data`` is refused as one JSON document (a few words naming the limit), or None."""
    size = len(data.encode() if isinstance(data, str) else data)
    if size > max_bytes:
        return f"larger than the limit of {size_text(max_bytes)}"
    if deeper_than(data, max_depth):
        return f"nested deeper than the limit of {max_depth} levels"
    return None


def read_capped(path: Path, max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The file's bytes, at most ``max_bytes + 1`` of them (one more than allowed, so ``problem``
    sees a file that is too large without it being read whole). ``OSError`` as ``open`` raises."""
    with path.open("rb") as f:
        return f.read(max_bytes + 1)
