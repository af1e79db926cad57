"""The metrics facade over prometheus_client: format, cumulative histogram, escaping, misuse,
one registry per daemon, process metrics."""

from __future__ import annotations

import os
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from keeper.app.metrics import Counter, Gauge, Histogram, Metrics, Registry

# name{labels} value — labels are key="value" with \\ \" \n escapes
SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?P<labels>[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*)\})?'
    r' (?P<value>[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|Inf|NaN))$')
COMMENT = re.compile(r"^# (?:HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* "
                     r"(?:counter|gauge|histogram|summary|untyped))$")


def parse(text: str) -> dict[str, float]:
    """Every line must be a comment or a sample; returns ``name{labels}`` -> value."""
    assert text.endswith("\n")
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert COMMENT.match(line), f"bad comment line: {line!r}"
            continue
        m = SAMPLE.match(line)
        assert m, f"bad sample line: {line!r}"
        key = m["name"] + ("{" + m["labels"] + "}" if m["labels"] else "")
        assert key not in out, f"duplicate series {key}"
        out[key] = float(m["value"])
    return out


def test_counters_gauges_and_labels_render_and_parse():
    r = Registry()
    c = r.add(Counter("x_total", "Things.", ["type"]))
    g = r.add(Gauge("lag", "Lag."))
    c.inc("a")
    c.inc("a", by=2)
    c.inc('we"ird\\\n')
    g.set(1.5)
    samples = parse(r.render())
    assert samples['x_total{type="a"}'] == 3
    assert samples['x_total{type="we\\"ird\\\\\\n"}'] == 1
    assert samples["lag"] == 1.5


def test_histogram_buckets_are_cumulative_with_sum_and_count():
    r = Registry()
    h = r.add(Histogram("lat_seconds", "Latency.", [0.001, 0.01, 0.1]))
    for v in (0.0005, 0.001, 0.005, 0.05, 0.5, 5):
        h.observe(v)
    s = parse(r.render())
    assert s['lat_seconds_bucket{le="0.001"}'] == 2  # <= is inclusive
    assert s['lat_seconds_bucket{le="0.01"}'] == 3
    assert s['lat_seconds_bucket{le="0.1"}'] == 4
    assert s['lat_seconds_bucket{le="+Inf"}'] == 6
    assert s["lat_seconds_count"] == 6
    assert s["lat_seconds_sum"] == pytest.approx(5.5565)


def test_the_keepers_metric_set_is_complete():
    m = Metrics()
    m.tick_to_intent.observe(0.002)
    m.feed_staleness.set(3, "BTC-PERP")
    text = m.render()
    for name in ("keeper_events_ingested_total", "keeper_events_applied_total",
                 "keeper_log_lag_entries", "keeper_buckets_at_risk", "keeper_intents_total",
                 "keeper_tick_to_intent_seconds", "keeper_feed_staleness_seconds",
                 "keeper_dead_letters_total"):
        assert f"# TYPE {name} " in text
    s = parse(text)
    assert s['keeper_feed_staleness_seconds{symbol="BTC-PERP"}'] == 3
    assert s['keeper_tick_to_intent_seconds_bucket{le="0.0025"}'] == 1
    assert s['keeper_tick_to_intent_seconds_bucket{le="0.001"}'] == 0


def test_misuse_is_refused():
    with pytest.raises(ValueError, match="bad metric name"):
        Counter("1bad", "x")
    with pytest.raises(ValueError, match="bad label name"):
        Gauge("ok", "x", ["le"])
    c = Counter("c_total", "x", ["a"])
    with pytest.raises(ValueError, match="cannot go down"):
        c.inc("v", by=-1)
    with pytest.raises(ValueError, match="takes labels"):
        c.inc()
    r = Registry()
    r.add(Gauge("g", "x"))
    with pytest.raises(ValueError, match="registered twice"):
        r.add(Gauge("g", "y"))


def test_the_exposition_parses_with_the_reference_parser_and_has_process_metrics():
    m = Metrics()
    m.intents.inc("confirmed", by=2)
    m.log_lag.set(7)
    m.tick_to_intent.observe(0.003)
    families = {f.name: f for f in text_string_to_metric_families(m.render())}
    assert families["keeper_intents"].type == "counter"
    assert {(s.name, s.labels.get("outcome"), s.value) for s in families["keeper_intents"].samples
            if s.name.endswith("_total")} == {("keeper_intents_total", "confirmed", 2.0)}
    assert families["keeper_log_lag_entries"].samples[0].value == 7
    assert families["keeper_tick_to_intent_seconds"].type == "histogram"
    assert "python_info" in families
    if os.path.exists("/proc/self/stat"):
        assert families["process_resident_memory_bytes"].samples[0].value > 0


def test_each_registry_is_its_own_so_two_daemons_do_not_collide():
    a, b = Metrics(), Metrics()
    a.intents.inc("paper")
    assert a.intents.value("paper") == 1 and b.intents.value("paper") == 0
    assert 'keeper_intents_total{outcome="paper"}' not in b.render()


def test_a_reading_not_yet_taken_is_absent_then_read_back():
    m = Metrics()
    assert "keeper_redis_up" not in parse(m.render()) and "# TYPE keeper_redis_up gauge" in m.render()
    m.redis_up.set(0)
    assert parse(m.render())["keeper_redis_up"] == 0
    assert m.redis_up.value() == 0
    m.feed_staleness.set(3, "BTC")
    m.feed_staleness.remove("BTC")
    assert 'symbol="BTC"' not in m.render()
    assert m.tick_to_intent.count() == 0
    m.tick_to_intent.observe(9.0)
    assert m.tick_to_intent.count() == 1


def test_openmetrics_is_served_when_asked_for():
    body, content_type = Metrics().expose("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    body, content_type = Metrics().expose("*/*")
    assert content_type.startswith("text/plain; version=0.0.4")


def test_a_tracked_gauge_is_read_at_each_scrape():
    m = Metrics()
    depth = [3]
    m.log_lag.track(lambda: depth[0])
    assert parse(m.render())["keeper_log_lag_entries"] == 3
    depth[0] = 5
    assert parse(m.render())["keeper_log_lag_entries"] == 5 and m.log_lag.value() == 5
    with pytest.raises(ValueError, match="only an unlabelled gauge"):
        m.feed_staleness.track(lambda: 1.0)
