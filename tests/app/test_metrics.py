"""The hand-written Prometheus exposition: format, cumulative histogram, escaping, misuse."""

from __future__ import annotations

import re

import pytest

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
