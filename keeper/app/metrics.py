"""Prometheus metrics through ``prometheus_client``: the keeper's named set behind a small facade.

Each ``Registry`` (a daemon's ``Metrics``) owns its own ``prometheus_client.CollectorRegistry``,
never the library's global one, so tests and several daemons in one process do not collide.
``render()`` is ``prometheus_client.generate_latest`` (the text format 0.0.4); ``expose(accept)``
negotiates the format the scraper asks for (OpenMetrics or text) as ``prometheus_client`` does.
``Metrics`` also registers the library's process and platform collectors: ``process_*`` (CPU,
resident and virtual memory, open files, start time; Linux) and ``python_info``, ``python_gc_*``.

The facade keeps the calls the roles make short and checked: ``Counter.inc(*labels, by=)``,
``Gauge.set(value, *labels)`` (or ``Gauge.track(read)``: a live reading taken at each scrape),
``Histogram.observe(value, *labels)``, and ``value()``/``count()`` to read a series back. A
wrong number of label values, a counter going down, a bad name and a name registered twice
raise ``ValueError``. A counter's name ends in ``_total`` (the exposed name is the name given).
An unlabelled gauge has no sample until its first ``set`` (a reading not yet taken is not a
zero: ``_ReadingCollector``); every metric's HELP and TYPE lines are exposed from
registration. Callers need no locks: ``prometheus_client`` takes its own.

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
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

import prometheus_client as prom
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

__all__ = ["LATENCY_BUCKETS", "Counter", "Gauge", "Histogram", "Metrics", "Registry"]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds: from sub-millisecond (a loopback tick-to-intent) to seconds (trouble)."""

P = TypeVar("P", prom.Counter, prom.Gauge, prom.Histogram)


class _Metric(Generic[P]):
    """One named metric: its ``prometheus_client`` object and the label checks."""

    def __init__(self, name: str, labels: Sequence[str]) -> None:
        if not _NAME.match(name):
            raise ValueError(f"bad metric name {name!r}")
        for lb in labels:
            if not _LABEL.match(lb) or lb == "le":
                raise ValueError(f"bad label name {lb!r}")
        self.name = name
        self.labels = tuple(labels)
        self._children: dict[tuple[str, ...], P] = {}
        self._prom: P

    def _child(self, values: Sequence[str]) -> P:
        key = tuple(values)
        child = self._children.get(key)
        if child is None:
            if len(key) != len(self.labels):
                raise ValueError(f"{self.name} takes labels {self.labels}, got {key}")
            child = self._prom.labels(*(str(v) for v in key)) if self.labels else self._prom
            self._children[key] = child
        return child

    def _sample(self, sample_name: str, values: Sequence[str]) -> float:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(values)}")
        want = {k: str(v) for k, v in zip(self.labels, values, strict=True)}
        for family in self._prom.collect():
            for s in family.samples:
                if s.name == sample_name and s.labels == want:
                    return float(s.value)
        return 0.0

    def _attach(self, registry: prom.CollectorRegistry) -> None:
        registry.register(self._prom)


class Counter(_Metric[prom.Counter]):
    """A monotonically increasing count per label set; its name ends in ``_total``."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, labels)
        if not name.endswith("_total"):
            raise ValueError(f"bad metric name {name!r}: a counter's name ends in _total")
        self._prom = prom.Counter(name, help_text, self.labels, registry=None)

    def inc(self, *label_values: str, by: float = 1.0) -> None:
        """Add ``by`` (>= 0) to the series with these label values."""
        if by < 0:
            raise ValueError(f"{self.name}: a counter cannot go down (by={by})")
        self._child(label_values).inc(by)

    def value(self, *label_values: str) -> float:
        """The series' count (0 when it has none yet)."""
        return self._sample(self.name, label_values)


class Gauge(_Metric[prom.Gauge]):
    """A value that goes up and down per label set. Unlabelled, it is exposed from its first
    ``set``."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, labels)
        self.help = help_text
        self._prom = prom.Gauge(name, help_text, self.labels, registry=None)
        self.taken = bool(self.labels)
        """False while an unlabelled gauge was never set: then it has no sample."""

    def _attach(self, registry: prom.CollectorRegistry) -> None:
        registry.register(self._prom if self.labels else _ReadingCollector(self))

    def set(self, value: float, *label_values: str) -> None:
        """Set the series with these label values to ``value``."""
        self._child(label_values).set(float(value))
        self.taken = True

    def track(self, read: Callable[[], float]) -> None:
        """Take the value from ``read()`` at every scrape from now on (a live reading: a queue's
        depth, a lag); unlabelled gauges only. ``read`` runs on the scraping task: keep it cheap
        and free of I/O."""
        if self.labels:
            raise ValueError(f"{self.name}: only an unlabelled gauge tracks a reading")
        self._prom.set_function(read)
        self.taken = True

    def value(self, *label_values: str) -> float:
        """The series' value (0 when it was never set)."""
        return self._sample(self.name, label_values)

    def remove(self, *label_values: str) -> None:
        """Drop a series (a symbol no longer fed)."""
        if len(label_values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {tuple(label_values)}")
        self._children.pop(tuple(label_values), None)
        if self.labels:
            self._prom.remove(*label_values)


class _ReadingCollector(Collector):
    """An unlabelled gauge as a collector: its HELP and TYPE always, its sample once it was
    set (a reading not yet taken is not a zero)."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.gauge.name, self.gauge.help)]

    def collect(self) -> Iterable[Metric]:
        return self.gauge._prom.collect() if self.gauge.taken else self.describe()


class Histogram(_Metric[prom.Histogram]):
    """Observations counted into cumulative ``le`` buckets (``+Inf`` added), with sum and count."""

    def __init__(self, name: str, help_text: str, buckets: Iterable[float],
                 labels: Sequence[str] = ()) -> None:
        super().__init__(name, labels)
        bounds = sorted(float(b) for b in buckets)
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{self.name}: buckets must be distinct and non-empty")
        self.bounds = tuple(b for b in bounds if not math.isinf(b))
        self._prom = prom.Histogram(name, help_text, self.labels, registry=None,
                                    buckets=(*self.bounds, math.inf))

    def observe(self, value: float, *label_values: str) -> None:
        """Count ``value`` into the series with these label values."""
        self._child(label_values).observe(value)

    def count(self, *label_values: str) -> int:
        """How many observations the series holds."""
        return int(self._sample(self.name + "_count", label_values))


M = TypeVar("M", Counter, Gauge, Histogram)


class Registry:
    """An ordered set of metrics exposed together, over its own ``CollectorRegistry``."""

    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        self._names: set[str] = set()

    def add(self, metric: M) -> M:
        """Register ``metric``; ``ValueError`` when its name is taken."""
        if metric.name in self._names:
            raise ValueError(f"metric {metric.name} registered twice")
        self._names.add(metric.name)
        metric._attach(self.registry)
        return metric

    def render(self) -> str:
        """The text exposition format 0.0.4 (HELP and TYPE lines, then the samples)."""
        return prom.generate_latest(self.registry).decode()

    def expose(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition in the format an ``Accept`` header asks for, and its content type
        (text 0.0.4 unless the scraper asks for OpenMetrics or text 1.0.0)."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


class Metrics(Registry):
    """The keeper's standard metrics (see the module docstring for names and meaning), with the
    process and platform collectors of ``prometheus_client``."""

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
        prom.ProcessCollector(registry=self.registry)
        prom.PlatformCollector(registry=self.registry)
        prom.GCCollector(registry=self.registry)
