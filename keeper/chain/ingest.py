"""Chain ingest: a contract's event logs and per-block readings into the log, reorg-safe.

For each block up to ``head - confirmations``, in order, one atomic append holds the block's
``ChainLog`` entries (its logs from the watched contract, decoded) followed by its ``ChainBlock``
frame (header, and the venue's readings at that block: oracle prices, IRM rates). Ids come from
the chain (``evm:<chain>:<block hash>:<log index>``, ``blk:<chain>:<block hash>``), so a block
read twice lands once.

- **Backfill.** From ``start_block`` (or where the log stops) the logs are read with
  ``eth_getLogs`` in ranges of ``range_blocks``; only the last block of a backfill gets a frame.
- **Follow.** Near the head, block by block: header, ``eth_getLogs`` by block hash, readings.
  New heads arrive over a websocket ``newHeads`` subscription when ``ws_url`` is given (the
  loop also polls every ``poll_s``, so a dropped socket loses nothing, only latency).
- **Resume.** On start the log is read for this venue's recent frames and logs: the next block
  is the one after the last frame, and the recent blocks' hashes and log ids are known again.
- **Reorgs.** A block whose parent hash is not the recorded hash of the block before is a
  reorganisation: the ingest walks back to the fork, appends a ``ChainLogRemoved`` for every
  recorded log of the orphaned blocks (newest first: the fold undoes them exactly), and reads the
  new branch. Logs come only from ``eth_getLogs`` by block hash, never from a ``logs``
  subscription, so a ``removed: true`` delivery cannot be missed: the parent-hash check finds
  every reorganisation, however the node reports it. A log seen again after its removal gets a
  ``#<n>`` suffix on its id (the log's dedup would otherwise drop it).
- **Faults.** ``start`` refuses a node that does not answer (its URL redacted) or reports
  another chain id. While running, a node that stops answering is waited out with backoff
  (``status`` says why); nothing is skipped and nothing appended twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
import websockets

from keeper.backoff import Backoff, exponential_backoff
from keeper.chain.abi import AbiError
from keeper.chain.rpc import ChainUnavailable, Rpc, RpcError
from keeper.clock import wall_clock_us
from keeper.domain import events as ev
from keeper.errors import KeeperError
from keeper.ports import EventLog
from keeper.redaction import redact_url

__all__ = ["KEEP_BLOCKS", "ChainIngest", "ChainMismatch", "IngestStatus", "LogSource", "check_node"]

_log = structlog.get_logger("keeper.chain.ingest")

RETRY: Backoff = exponential_backoff(0.1, 5.0)
"""The wait before the n-th retry in a row of a node that does not answer (reads, new heads)."""


class LogSource(Protocol):
    """What the ingest needs of a venue (``keeper.chain.morpho.MorphoVenue``, ...)."""

    def log_filter(self) -> dict[str, Any]:
        """The ``eth_getLogs`` filter beside the block range: ``{"address": ...}`` or ``{}``."""
        ...

    def decode(self, raw: Mapping[str, Any]) -> tuple[str, dict[str, int | str]] | None:
        """``(event name, args)`` of one of the venue's logs; ``None`` for a log not its own.
        Raises ``AbiError`` for its own log that does not decode."""
        ...

    def on_log(self, e: ev.ChainLog) -> None:
        """Called with every recorded log in order (live and when resuming): the venue learns
        its markets, reserves and token addresses here."""
        ...

    async def readings(self, block_hash: str) -> tuple[dict[str, int], dict[str, int]]:
        """``(prices, rates)`` read at that block for the block frame."""
        ...

KEEP_BLOCKS = 256
"""How many recent blocks' hashes and log ids the ingest keeps for reorg detection."""


class ChainMismatch(KeeperError):
    """The node serves another chain than the configuration names."""


@dataclass
class IngestStatus:
    """What ``/readyz`` and ``/metrics`` show of the ingest."""

    last_block: int = -1
    head: int = -1
    connected: bool = False
    error: str = ""
    blocks: int = 0
    logs: int = 0
    reorgs: int = 0
    removed: int = 0
    undecodable: int = 0

    @property
    def behind(self) -> int:
        return max(0, self.head - self.last_block) if self.head >= 0 else 0


@dataclass
class _Block:
    hash: str
    log_ids: list[str] = field(default_factory=list)


def _hex(n: int) -> str:
    return hex(n)


class ChainIngest:
    """See the module docstring. ``markets`` returns the market ids to read at a block."""

    def __init__(
        self,
        rpc: Rpc,
        log: EventLog,
        *,
        venue: str,
        chain_id: int,
        source: LogSource,
        confirmations: int = 0,
        start_block: int = 0,
        range_blocks: int = 2_000,
        ws_url: str | None = None,
        poll_s: float = 0.5,
        now_us: Callable[[], int] = wall_clock_us,
    ) -> None:
        self.rpc = rpc
        self.log = log
        self.venue = venue
        self.chain_id = chain_id
        self.source = source
        self.confirmations = confirmations
        self.start_block = start_block
        self.range_blocks = range_blocks
        self.ws_url = ws_url
        self.poll_s = poll_s
        self.now_us = now_us
        self.status = IngestStatus()
        self.next_block = start_block
        self._recent: OrderedDict[int, _Block] = OrderedDict()
        self._removed: dict[str, int] = {}
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ start and resume

    async def start(self) -> None:
        """Check the node and its chain id, then resume from what the log holds."""
        await check_node(self.rpc, self.chain_id)
        self.status.connected = True
        await self._resume()

    async def _resume(self) -> None:
        after = "0-0"
        last_frame: ev.ChainBlock | None = None
        pending_logs: dict[str, list[str]] = {}
        while True:
            entries, after_next = await self.log.read_batch(after, 5_000)
            if after_next == after:
                break
            after = after_next
            for entry in entries:
                e = entry.event
                if isinstance(e, ev.ChainLog) and e.venue == self.venue:
                    pending_logs.setdefault(e.block_hash, []).append(e.event_id)
                    self.source.on_log(e)
                elif isinstance(e, ev.ChainLogRemoved) and e.venue == self.venue:
                    self._removed[e.removed_id.partition("#")[0]] = self._removed.get(
                        e.removed_id.partition("#")[0], 0) + 1
                    for ids in pending_logs.values():
                        if e.removed_id in ids:
                            ids.remove(e.removed_id)
                elif isinstance(e, ev.ChainBlock) and e.venue == self.venue:
                    last_frame = e
                    self._remember(e.block, e.block_hash, pending_logs.pop(e.block_hash, []))
            if not entries:
                break
        if last_frame is not None:
            self.next_block = last_frame.block + 1
            self.status.last_block = last_frame.block
            _log.info("chain_ingest_resumed", venue=self.venue, block=last_frame.block)

    def _remember(self, number: int, block_hash: str, log_ids: list[str]) -> None:
        for n in [n for n in self._recent if n >= number]:
            del self._recent[n]
        self._recent[number] = _Block(block_hash, list(log_ids))
        while len(self._recent) > KEEP_BLOCKS:
            self._recent.popitem(last=False)

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the chain until ``stop``; outages are waited out (``status.error`` says why)."""
        ws_task = asyncio.create_task(self._heads(stop)) if self.ws_url else None
        failures = 0
        try:
            while not stop.is_set():
                # cleared before reading: a head announced while ``sync`` runs wakes the next one
                self._wake.clear()
                try:
                    await self.sync()
                    self.status.connected, self.status.error = True, ""
                    failures = 0
                except (ChainUnavailable, RpcError) as exc:
                    self.status.connected, self.status.error = False, str(exc)
                    failures += 1
                    delay = RETRY(failures)
                    _log.warning("chain_ingest_retry", venue=self.venue, error=str(exc), delay_s=delay)
                    await _sleep_or_stop(stop, delay)
                    continue
                await _first(self.poll_s, stop, self._wake)
        finally:
            if ws_task is not None:
                ws_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ws_task

    async def _heads(self, stop: asyncio.Event) -> None:
        assert self.ws_url is not None
        failures = 0
        while not stop.is_set():
            try:
                async with websockets.connect(self.ws_url, max_queue=64, open_timeout=5) as ws:
                    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                              "params": ["newHeads"]}))
                    failures = 0
                    async for _ in ws:
                        self._wake.set()
            except (TimeoutError, OSError, websockets.WebSocketException) as exc:
                _log.info("chain_heads_reconnect", venue=self.venue, error=str(exc),
                          delay_s=RETRY(failures + 1))
            failures += 1
            await _sleep_or_stop(stop, RETRY(failures))

    async def sync(self) -> int:
        """Ingest every block up to ``head - confirmations``; returns the blocks recorded."""
        head = int(await self.rpc.call("eth_blockNumber"), 16)
        self.status.head = head
        target = head - self.confirmations
        done = 0
        while self.next_block <= target:
            if target - self.next_block > 64:
                last = min(target - 1, self.next_block + self.range_blocks - 1)
                done += await self._backfill(self.next_block, last)
            else:
                done += await self._follow(self.next_block)
        return done

    # ------------------------------------------------------------------ backfill

    async def _backfill(self, first: int, last: int) -> int:
        logs = await self.rpc.call("eth_getLogs", {"fromBlock": _hex(first), "toBlock": _hex(last),
                                                   **self.source.log_filter()})
        by_block: dict[int, list[Mapping[str, Any]]] = {}
        for raw in logs:
            by_block.setdefault(int(raw["blockNumber"], 16), []).append(raw)
        headers = await self.rpc.batch([("eth_getBlockByNumber", [_hex(n), False])
                                        for n in sorted(by_block)])
        events: list[ev.Event] = []
        for n, header in zip(sorted(by_block), headers, strict=True):
            block_logs = self._decode(header, by_block[n])
            events.extend(block_logs)
            self._remember(n, str(header["hash"]), [e.event_id for e in block_logs])
        if events:
            await self.log.append(events)
        self._count(events)
        self.next_block = last + 1
        self.status.last_block = last
        return last - first + 1

    # ------------------------------------------------------------------ follow

    async def _follow(self, number: int) -> int:
        header = await self.rpc.call("eth_getBlockByNumber", _hex(number), False)
        if header is None:  # the head moved back under us (a reorg to a shorter chain)
            self.next_block = max(self.start_block, number - 1)
            return 0
        parent = self._recent.get(number - 1)
        if parent is not None and parent.hash != str(header["parentHash"]):
            await self._reorg(number - 1)
            return 0
        block_hash = str(header["hash"])
        logs = await self.rpc.call("eth_getLogs", {"blockHash": block_hash, **self.source.log_filter()})
        block_logs = self._decode(header, logs)
        prices, rates = await self.source.readings(block_hash)
        frame = ev.ChainBlock(
            event_id=f"blk:{self.chain_id}:{block_hash}", ts_event=int(header["timestamp"], 16) * 1_000_000,
            ts_ingest=self.now_us(), venue=self.venue, chain_id=self.chain_id, block=number,
            block_hash=block_hash, parent_hash=str(header["parentHash"]),
            block_time=int(header["timestamp"], 16), prices=prices, rates=rates)
        await self.log.append([*block_logs, frame])
        self._count(block_logs)
        self._remember(number, block_hash, [e.event_id for e in block_logs])
        self.next_block = number + 1
        self.status.last_block = number
        self.status.blocks += 1
        return 1

    async def _reorg(self, number: int) -> None:
        """The recorded block ``number`` is not the parent of the chain's next block: find the
        fork, undo the orphaned blocks' logs (newest first), and read on from the fork."""
        orphaned: list[int] = []
        n = number
        while n in self._recent:
            header = await self.rpc.call("eth_getBlockByNumber", _hex(n), False)
            if header is not None and str(header["hash"]) == self._recent[n].hash:
                break
            orphaned.append(n)
            n -= 1
        if n not in self._recent and orphaned:
            raise KeeperError(f"reorganisation deeper than the last {KEEP_BLOCKS} blocks at block {number}: "
                              f"rebuild the log from a block before it")
        removals: list[ev.Event] = []
        for b in orphaned:  # newest first
            for log_id in reversed(self._recent[b].log_ids):
                removals.append(ev.ChainLogRemoved(
                    event_id=f"rm:{log_id}", ts_event=self.now_us(), ts_ingest=self.now_us(),
                    venue=self.venue, removed_id=log_id, block=b))
                base = log_id.partition("#")[0]
                self._removed[base] = self._removed.get(base, 0) + 1
            del self._recent[b]
        if removals:
            await self.log.append(removals)
        self.status.reorgs += 1
        self.status.removed += len(removals)
        self.next_block = n + 1
        _log.warning("chain_reorg", venue=self.venue, fork_block=n, orphaned=len(orphaned),
                     logs_removed=len(removals))

    # ------------------------------------------------------------------ decoding

    def _decode(self, header: Mapping[str, Any], logs: Sequence[Mapping[str, Any]]) -> list[ev.ChainLog]:
        block_hash = str(header["hash"])
        block_time = int(header["timestamp"], 16)
        out: list[ev.ChainLog] = []
        for raw in sorted(logs, key=lambda r: int(r["logIndex"], 16)):
            if raw.get("removed"):
                continue  # a removed log is never recorded; the parent-hash check undoes it
            try:
                decoded = self.source.decode(raw)
            except AbiError as exc:
                self.status.undecodable += 1
                _log.warning("chain_log_undecodable", venue=self.venue, error=str(exc))
                continue
            if decoded is None:
                continue  # not the venue's
            name, args = decoded
            base = f"evm:{self.chain_id}:{block_hash}:{int(raw['logIndex'], 16)}"
            again = self._removed.get(base, 0)
            e = ev.ChainLog(
                event_id=base if again == 0 else f"{base}#{again}",
                ts_event=block_time * 1_000_000, ts_ingest=self.now_us(), venue=self.venue, name=name,
                block=int(raw["blockNumber"], 16), block_hash=block_hash, tx_hash=str(raw["transactionHash"]),
                log_index=int(raw["logIndex"], 16), block_time=block_time, args=args,
                address=str(raw.get("address", "")).lower())
            out.append(e)
            self.source.on_log(e)
        return out

    def _count(self, logs: Sequence[ev.Event]) -> None:
        self.status.logs += len(logs)


async def check_node(rpc: Rpc, chain_id: int) -> None:
    """Refuse a node that does not answer (``ChainUnavailable``, its URL redacted) or serves
    another chain than ``chain_id`` (``ChainMismatch``)."""
    try:
        got = int(await rpc.call("eth_chainId"), 16)
    except ChainUnavailable as exc:
        raise ChainUnavailable(f"the chain node at {redact_url(rpc.url)} does not answer: {exc}") from None
    if got != chain_id:
        raise ChainMismatch(
            f"the node at {redact_url(rpc.url)} serves chain id {got}, the configuration "
            f"names {chain_id}: fix [venue] chain_id or the RPC URL")


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    await _first(delay, stop)


async def _first(timeout_s: float, *events: asyncio.Event) -> None:
    """Until one of ``events`` is set, at most ``timeout_s``. Not ``asyncio.wait_for``: on 3.11
    it can swallow a cancellation that arrives as its inner wait completes, and a loop around it
    would then never end (seen at shutdown under asyncio's debug mode)."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
