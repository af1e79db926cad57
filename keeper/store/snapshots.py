"""Snapshot stores (implement ``keeper.ports.SnapshotStore``): Redis and files.

A snapshot is ``data`` (opaque bytes, the projector's encoded state) with the log ``offset`` it
reflects and a ``format`` number, sealed by ``sha256(format "\\n" offset "\\n" data)``. Saving
writes all of it in one atomic step and keeps the previous snapshot. ``load`` returns the newest
snapshot that validates (checksum and format); an invalid one is skipped with a warning and the
previous valid one is used, never trusted. ``None`` when no valid snapshot exists.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import msgspec
import structlog

from keeper.domain.state import STATE_FORMAT
from keeper.store import scripts
from keeper.store.redis_log import wrap_errors
from keeper.store.slotconn import RedisClient

__all__ = ["FileSnapshotStore", "RedisSnapshotStore", "checksum"]

log = structlog.get_logger()


def checksum(fmt: int, offset: str, data: bytes) -> str:
    h = hashlib.sha256(f"{fmt}\n{offset}\n".encode())
    h.update(data)
    return h.hexdigest()


def _valid(name: str, which: str, *, fmt: Any, offset: Any, sha: Any, data: Any, want_fmt: int) -> bool:
    """Whether a stored snapshot validates; logs why not."""
    if offset is None or data is None or sha is None or fmt is None:
        return False
    try:
        f = int(fmt)
    except ValueError:
        f = -1
    if f != want_fmt:
        log.warning("snapshot_skipped", name=name, which=which, reason="format", format=f,
                    expected=want_fmt)
        return False
    off = offset.decode() if isinstance(offset, bytes) else str(offset)
    s = sha.decode() if isinstance(sha, bytes) else str(sha)
    if checksum(f, off, data) != s:
        log.warning("snapshot_skipped", name=name, which=which, reason="checksum", offset=off)
        return False
    return True


class RedisSnapshotStore:
    """Snapshots in one hash per name, ``{prefix}:{shard}:snap:{name}`` (fields for current and prev)."""

    def __init__(self, client: RedisClient, *, shard: str = "0", prefix: str = "keeper",
                 format: int = STATE_FORMAT) -> None:
        self.client = client
        self.prefix = f"{prefix}:{{{shard}}}:snap"
        self.format = format
        self._save = client.register_script(scripts.SNAPSHOT_SAVE)

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    async def save(self, name: str, offset: str, data: bytes) -> None:
        """Write the snapshot atomically (one Lua call); the one it replaces becomes ``prev``."""
        async with wrap_errors("snapshot_save"):
            await self._save(keys=[self.key(name)],
                             args=[offset, self.format, checksum(self.format, offset, data), data])
        log.info("snapshot_saved", name=name, offset=offset, bytes=len(data))

    async def load(self, name: str) -> tuple[str, bytes] | None:
        async with wrap_errors("snapshot_load"):
            h: Any = await self.client.hgetall(self.key(name))
        for which, p in (("current", b""), ("previous", b"prev_")):
            fmt, off, sha, data = (h.get(p + f) for f in (b"format", b"offset", b"sha256", b"data"))
            if _valid(name, which, fmt=fmt, offset=off, sha=sha, data=data, want_fmt=self.format):
                return off.decode(), data
        return None


class _Header(msgspec.Struct):
    offset: str
    format: int
    sha256: str
    length: int


_header_enc = msgspec.json.Encoder()
_header_dec = msgspec.json.Decoder(_Header)


class FileSnapshotStore:
    """Snapshots as files ``<name>.snap`` (newest) and ``<name>.prev.snap`` in ``directory``.

    Each file is one JSON header line (offset, format, sha256, length) then the data. A save
    writes a temporary file, fsyncs it, moves the newest to ``.prev`` and renames the new one
    in (``os.replace`` is atomic); a crash between the two renames leaves ``.prev`` valid.
    """

    def __init__(self, directory: Path, *, format: int = STATE_FORMAT) -> None:
        self.directory = Path(directory)
        self.format = format

    def path(self, name: str, prev: bool = False) -> Path:
        return self.directory / (f"{name}.prev.snap" if prev else f"{name}.snap")

    async def save(self, name: str, offset: str, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        cur, prev = self.path(name), self.path(name, prev=True)
        tmp = cur.with_suffix(".tmp")
        header = _header_enc.encode(_Header(offset, self.format, checksum(self.format, offset, data),
                                            len(data)))
        with tmp.open("wb") as f:
            f.write(header + b"\n")
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if cur.exists():
            os.replace(cur, prev)
        os.replace(tmp, cur)
        log.info("snapshot_saved", name=name, offset=offset, bytes=len(data), path=str(cur))

    def _read(self, name: str, which: str, path: Path) -> tuple[str, bytes] | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        line, _, data = raw.partition(b"\n")
        try:
            h = _header_dec.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("snapshot_skipped", name=name, which=which, reason="header", path=str(path))
            return None
        if len(data) != h.length:
            log.warning("snapshot_skipped", name=name, which=which, reason="length", path=str(path))
            return None
        if not _valid(name, which, fmt=h.format, offset=h.offset, sha=h.sha256, data=data,
                      want_fmt=self.format):
            return None
        return h.offset, data

    async def load(self, name: str) -> tuple[str, bytes] | None:
        return (self._read(name, "current", self.path(name))
                or self._read(name, "previous", self.path(name, prev=True)))
