"""Prometheus metrics, written by hand: counters, gauges and histograms with labels.

The daemon owns one ``Metrics`` (the keeper's standard set, below) and updates it from its
roles; ``/metrics`` serves ``Metrics.render()`` in the text exposition format 0.0.4. No locks:
everything runs on one event loop. Values are floats (these are screens, not money).

Names (all prefixed ``keeper_``)::

    events_ingested_total{type}        counter  events appended to the log, by event type
    events_applied_total{type}         counter  events applied to state, by event type
    log_lag_entries                    gauge    log entries not yet applied
    buckets_at_risk                    gauge    buckets with health below the watch threshold
    intents_total{outcome}             counter  intents by outcome (intended, submitted,
                                                confirmed, rejected, expired, paper)
    tick_to_intent_seconds             histogram price tick ingested -> intent recorded
    feed_staleness_seconds{symbol}     gauge    age of the last accepted price per symbol
    dead_letters_total{reason}         counter  log entries dead-lettered, by reason
    entries_quarantined                gauge    entries a core could not apply (an alarm)
    redis_up                           gauge    1 while Redis answers PING within 1 s
    redis_used_memory_bytes            gauge    Redis used_memory
    redis_maxmemory_bytes              gauge    Redis maxmemory (0: none)
    redis_refused_writes_total         counter  writes refused (OOM, READONLY, MISCONF)
    redis_errors_total                 counter  Redis calls that failed
    roles_waiting_for_redis            gauge    roles waiting out a Redis fault now
    log_last_append_age_seconds        gauge    time since the newest log entry
    process_resident_memory_bytes      gauge    the keeper process's resident memory
    retention_*                        passes, archived and trimmed entries, hot entries, lagging pins
    chain_*                            gauges   a chain venue's ingest and executor (docs/chain.md)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import TypeVar

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds; loopback tick-to-intent is sub-millisecond at p50 (PERF_NOTES), seconds is trouble."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        if not _NAME.match(name):
            raise ValueError(f"bad metric name {name!r}")
        for lb in labels:
            if not _LABEL.match(lb) or lb == "le":
                raise ValueError(f"bad label name {lb!r}")
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)

    def _key(self, values: Sequence[str]) -> tuple[str, ...]:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(values)}")
        return tuple(str(v) for v in values)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing count per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        # a counter without labels is exposed (as 0) from the start: an alert on its rate
        # needs the series before the first increment
        self._values: dict[tuple[str, ...], float] = {} if self.labels else {(): 0.0}

    def inc(self, *label_values: str, by: float = 1.0) -> None:
        """Add ``by`` (>= 0) to the series with these label values."""
        if by < 0:
            raise ValueError(f"{self.name}: a counter cannot go down (by={by})")
        key = self._key(label_values)
        self._values[key] = self._values.get(key, 0.0) + by

    def value(self, *label_values: str) -> float:
        return self._values.get(self._key(label_values), 0.0)

    def samples(self) -> list[str]:
        return [f"{self.name}{_labels(self.labels, k)} {_fmt(v)}"
                for k, v in sorted(self._values.items())]


class Gauge(_Metric):
    """A value that goes up and down per label set."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {}

    def set(self, value: float, *label_values: str) -> None:
        self._values[self._key(label_values)] = float(value)

    def value(self, *label_values: str) -> float:
        return self._values.get(self._key(label_values), 0.0)

    def remove(self, *label_values: str) -> None:
        """Drop a series (a symbol no longer fed)."""
        self._values.pop(self._key(label_values), None)

    def samples(self) -> list[str]:
        return [f"{self.name}{_labels(self.labels, k)} {_fmt(v)}"
                for k, v in sorted(self._values.items())]


class Histogram(_Metric):
    """Observations counted into cumulative ``le`` buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Iterable[float],
                 labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        bounds = sorted(float(b) for b in buckets)
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{self.name}: buckets must be distinct and non-empty")
        self.bounds = tuple(b for b in bounds if not math.isinf(b))
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *label_values: str) -> None:
        key = self._key(label_values)
        counts, total = self._series.setdefault(key, ([0] * (len(self.bounds) + 1), [0.0]))
        for i, b in enumerate(self.bounds):
            if value <= b:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        total[0] += value

    def count(self, *label_values: str) -> int:
        s = self._series.get(self._key(label_values))
        return sum(s[0]) if s else 0

    def samples(self) -> list[str]:
        out: list[str] = []
        for key, (counts, total) in sorted(self._series.items()):
            running = 0
            for b, c in zip((*self.bounds, math.inf), counts, strict=True):
                running += c
                le = f'le="{_fmt(b)}"'
                out.append(f"{self.name}_bucket{_labels(self.labels, key, le)} {running}")
            out.append(f"{self.name}_sum{_labels(self.labels, key)} {_fmt(total[0])}")
            out.append(f"{self.name}_count{_labels(self.labels, key)} {running}")
        return out


M = TypeVar("M", bound=_Metric)


class Registry:
    """An ordered set of metrics rendered together."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def add(self, metric: M) -> M:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric
        return metric

    def render(self) -> str:
        """The text exposition: HELP and TYPE lines, then the samples; ends with a newline."""
        lines: list[str] = []
        for m in self._metrics.values():
            lines += m.header()
            lines += m.samples()
        return "\n".join(lines) + "\n"


class Metrics(Registry):
    """The keeper's standard metrics (see the module docstring for names and meaning)."""

    def __init__(self, latency_buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        super().__init__()
        self.events_ingested = self.add(Counter(
            "keeper_events_ingested_total", "Events appended to the log, by event type.", ["type"]))
        self.events_applied = self.add(Counter(
            "keeper_events_applied_total", "Events applied to state, by event type.", ["type"]))
        self.log_lag = self.add(Gauge(
            "keeper_log_lag_entries", "Log entries not yet applied by the projector."))
        self.buckets_at_risk = self.add(Gauge(
            "keeper_buckets_at_risk", "Buckets with health below the watch threshold."))
        self.intents = self.add(Counter(
            "keeper_intents_total", "Liquidation intents by outcome.", ["outcome"]))
        self.tick_to_intent = self.add(Histogram(
            "keeper_tick_to_intent_seconds", "Price tick ingested to intent recorded, seconds.",
            latency_buckets))
        self.feed_staleness = self.add(Gauge(
            "keeper_feed_staleness_seconds", "Age of the last accepted price, per symbol.",
            ["symbol"]))
        self.dead_letters = self.add(Counter(
            "keeper_dead_letters_total", "Log entries dead-lettered, by reason.", ["reason"]))
        self.chain_block = self.add(Gauge(
            "keeper_chain_block", "Chain venue: the last block ingested and the node's head.", ["which"]))
        self.chain_behind = self.add(Gauge(
            "keeper_chain_blocks_behind", "Chain venue: blocks between the head and the last ingested."))
        self.chain_connected = self.add(Gauge(
            "keeper_chain_connected", "Chain venue: 1 while the node answers the ingest, else 0."))
        self.chain_reorgs = self.add(Gauge(
            "keeper_chain_reorgs", "Chain venue: reorganisations undone since start."))
        self.chain_pending = self.add(Gauge(
            "keeper_chain_pending_transactions", "Chain venue: liquidations signed and not yet mined."))
        self.chain_nonce = self.add(Gauge(
            "keeper_chain_next_nonce", "Chain venue: the executor's next nonce."))
        self.chain_gas = self.add(Gauge(
            "keeper_chain_gas_used", "Chain venue: gas used by the executor's mined transactions."))
        self.redis_up = self.add(Gauge(
            "keeper_redis_up", "1 while Redis answers PING within a second, else 0."))
        self.redis_used_memory = self.add(Gauge(
            "keeper_redis_used_memory_bytes", "Redis used_memory (INFO memory)."))
        self.redis_maxmemory = self.add(Gauge(
            "keeper_redis_maxmemory_bytes", "Redis maxmemory (0: no limit)."))
        self.redis_refused = self.add(Counter(
            "keeper_redis_refused_writes_total",
            "Writes Redis refused (OOM at maxmemory, READONLY, MISCONF)."))
        self.redis_errors = self.add(Counter(
            "keeper_redis_errors_total", "Redis calls that failed (refused, unreachable, other)."))
        self.redis_waiting = self.add(Gauge(
            "keeper_roles_waiting_for_redis", "Roles waiting out a Redis fault now."))
        self.last_append_age = self.add(Gauge(
            "keeper_log_last_append_age_seconds",
            "Seconds since the newest log entry was appended (by its entry id's time)."))
        self.quarantined = self.add(Gauge(
            "keeper_entries_quarantined", "Log entries a core could not apply since start "
            "(dead-lettered with the error): an alarm."))
        self.process_rss = self.add(Gauge(
            "keeper_process_resident_memory_bytes", "Resident memory of the keeper process."))
        self.retention_passes = self.add(Counter(
            "keeper_retention_passes_total", "Retention passes by result (ok, skipped, error).",
            ["result"]))
        self.retention_archived = self.add(Counter(
            "keeper_retention_archived_entries_total", "Log entries written to archive segments."))
        self.retention_trimmed = self.add(Counter(
            "keeper_retention_trimmed_entries_total", "Log entries trimmed from Redis."))
        self.retention_hot = self.add(Gauge(
            "keeper_retention_hot_entries", "Entries in the hot log after the last pass."))
        self.retention_lagging = self.add(Gauge(
            "keeper_retention_lagging_pins", "Readers holding entries older than the hot window "
            "(a projector not snapshotting, a dead consumer group): an alarm."))
        self.retention_seconds = self.add(Gauge(
            "keeper_retention_pass_seconds", "Duration of the last retention pass."))
        self.chain_refused = self.add(Gauge(
            "keeper_chain_refused_accounts", "Chain venue: accounts the core does not model (not decided)."))
