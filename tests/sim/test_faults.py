"""The venue's fault injector without HTTP: spec checking, counted faults, seeded shares."""

from __future__ import annotations

from keeper.sim.faults import FaultInjector, spec_error


def test_a_spec_with_an_unknown_key_or_a_bad_value_is_refused_with_the_key() -> None:
    assert spec_error({"http_5xx": 1, "drop_share": 0.5, "halt": ["BTC-USD"], "clear": True}) is None
    assert spec_error({"nope": 1}) == "unknown fault key nope"
    assert spec_error({"drop_share": 1.5}) == "bad value for drop_share: 1.5"
    assert spec_error({"http_5xx": -1}) == "bad value for http_5xx: -1"
    assert spec_error({"http_5xx": True}) == "bad value for http_5xx: True"
    assert spec_error({"delay_ms": 1.5}) == "bad value for delay_ms: 1.5"


def test_counted_faults_are_used_up_one_request_at_a_time() -> None:
    inj = FaultInjector()
    inj.configure({"http_5xx": 2, "rate_limit_next": 1, "drop_next": 1, "timeout_next": 1})
    assert [inj.rate_limited(), inj.rate_limited()] == [True, False]
    assert [inj.take_5xx(), inj.take_5xx(), inj.take_5xx()] == [True, True, False]
    assert [inj.lost_reply(), inj.lost_reply(), inj.lost_reply()] == ["drop", "hang", None]
    f = inj.faults
    assert (f.injected_429, f.injected_5xx, f.injected_drops, f.injected_timeouts) == (1, 2, 1, 1)


def test_clear_resets_what_is_set_but_keeps_the_counters() -> None:
    inj = FaultInjector()
    inj.configure({"http_5xx": 3, "drop_share": 0.5, "rate_limit": 10})
    assert inj.take_5xx()
    inj.configure({"clear": True})
    f = inj.faults
    assert (f.http_5xx, f.drop_share, f.rate_limit, f.injected_5xx) == (0, 0.0, 0, 1)


def test_the_same_seed_draws_the_same_lost_replies() -> None:
    def draws(seed: int) -> list[str | None]:
        inj = FaultInjector()
        inj.configure({"seed": seed, "drop_share": 0.3, "hang_share": 0.3})
        return [inj.lost_reply() for _ in range(200)]

    assert draws(7) == draws(7)
    assert {"drop", "hang", None} == set(draws(7))
