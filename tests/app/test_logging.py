"""Logging: JSON lines with context, console on demand, and secrets never in the output."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from keeper.app.config import load_config
from keeper.app.logging import configure_logging, resolve_format
from keeper.redaction import REDACTED, redact_value, register_secret

SECRETS = {
    "KEEPER_HMAC_SECRET": "hmac-7f3a9c1e-secret",
    "KEEPER_ADMIN_TOKEN": "adm-token-5d2b8e44",
    "KEEPER_REDIS_PASSWORD": "redispw-91c0ffee",
    "REDIS_URL": "redis://default:urlpw-0badcafe@127.0.0.1:6390/0",
}


def test_one_json_object_per_line_with_bound_context(json_logs):
    log = structlog.get_logger()
    with structlog.contextvars.bound_contextvars(role="keeper", shard=0):
        log.info("intent_submitted", intent_id="liq:a1/cross@1-0", account="a1", bucket="cross",
                 market="BTC-PERP", log_pos="1700000000000-3")
    (line,) = json_logs.lines()
    rec = json.loads(line)
    assert rec["event"] == "intent_submitted"
    assert rec["level"] == "info"
    assert rec["role"] == "keeper" and rec["shard"] == 0
    assert rec["intent_id"] == "liq:a1/cross@1-0" and rec["log_pos"] == "1700000000000-3"
    assert rec["timestamp"].endswith("Z")


def test_level_filters_lines(log_setup):
    buf = io.StringIO()
    log_setup("json", "warning", buf)
    structlog.get_logger().info("not_shown")
    logging.getLogger("redis").info("not_shown_either")
    structlog.get_logger().warning("shown")
    lines = buf.getvalue().splitlines()
    assert [json.loads(x)["event"] for x in lines] == ["shown"]


def test_auto_picks_console_on_a_terminal_and_json_elsewhere():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_format("auto", Tty()) == "console"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", Tty()) == "json"


def test_console_renderer_is_readable_and_redacts_too(log_setup):
    buf = io.StringIO()
    register_secret("console-secret-xyz")
    assert log_setup("console", "info", buf) == "console"
    structlog.get_logger().info("batch_applied", events=1000, note="key console-secret-xyz")
    out = buf.getvalue()
    assert "batch_applied" in out and "events=1000" in out
    assert "console-secret-xyz" not in out and "key ***" in out


def test_secrets_never_appear_in_the_logs_of_a_run(json_logs):
    """A run's worth of log lines, including the config dump, a secret passed by mistake in a
    message, in a nested field, in an exception and through the stdlib logger: grep finds none."""
    cfg = load_config(None, env=SECRETS)  # registers the secrets with the redactor
    log = structlog.get_logger()
    log.info("config_loaded", config=cfg.dump(), config_hash=cfg.config_hash())
    log.info("config_repr", cfg=repr(cfg), secrets=cfg.secrets)
    log.info("connecting", url=cfg.redis_url())
    log.warning("oops_logged_a_secret", detail=f"token was {SECRETS['KEEPER_ADMIN_TOKEN']}",
                nested={"headers": {"Authorization": f"Bearer {SECRETS['KEEPER_ADMIN_TOKEN']}"},
                        "list": [SECRETS["KEEPER_HMAC_SECRET"]]})
    log.info("auth", token="whatever-unregistered", password=None)
    try:
        raise RuntimeError(f"redis refused password {SECRETS['KEEPER_REDIS_PASSWORD']}")
    except RuntimeError:
        log.exception("connect_failed")
    logging.getLogger("aiohttp.client").warning("request to %s failed", cfg.redis_url())

    out = json_logs.getvalue()
    lines = json_logs.lines()
    assert len(lines) == 7
    records = [json.loads(x) for x in lines]  # every line is one JSON object
    for value in [*SECRETS.values(), "urlpw-0badcafe", "whatever-unregistered"]:
        assert value not in out, f"secret {value[:4]}… leaked into the logs"
    assert records[0]["config"]["secrets"]["admin_token"] == REDACTED
    assert records[2]["url"] == REDACTED  # REDIS_URL itself is registered as a secret
    assert records[3]["nested"]["headers"]["Authorization"] == REDACTED
    assert records[4]["token"] == REDACTED and records[4]["password"] is None
    assert "RuntimeError: redis refused password ***" in records[5]["exception"]
    assert records[6]["logger"] == "aiohttp.client" and "***" in records[6]["event"]


def test_redact_value_masks_secret_named_keys_at_any_depth():
    assert redact_value({"a": {"api_key": "k", "ok": 1}, "b": [{"Password": "p"}]}) == {
        "a": {"api_key": REDACTED, "ok": 1}, "b": [{"Password": REDACTED}]}


def test_short_values_are_not_registered_as_secrets(json_logs):
    register_secret("abc")  # would mask every "abc" in every line and protect nothing
    structlog.get_logger().info("abcdef")
    assert json.loads(json_logs.lines()[0])["event"] == "abcdef"


def test_an_unknown_level_is_refused():
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("json", "loud", stream=io.StringIO())
