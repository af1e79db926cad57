"""The one secret rule (``keeper.redaction``): which keys, values and URL parts are secret, and
that the configuration and the logs apply the same rule."""

from __future__ import annotations

import pytest

from keeper.app.config import load_config
from keeper.errors import ConfigError
from keeper.redaction import (
    REDACTED,
    clear_secrets,
    is_secret_key,
    mask_password,
    redact_item,
    redact_text,
    redact_url,
    register_secret,
)


@pytest.fixture(autouse=True)
def _forget_secrets():
    clear_secrets()
    yield
    clear_secrets()


@pytest.mark.parametrize("key", ["hmac_secret", "API_KEY", "Authorization", "passwd", "admin_token"])
def test_secret_named_keys_are_refused_in_config_and_masked_in_logs(key: str) -> None:
    assert is_secret_key(key)
    assert redact_item(key, "value") == REDACTED
    with pytest.raises(ConfigError, match="secrets have their own variables"):
        load_config(None, env={f"KEEPER_VENUE__{key.upper()}": "x"}, register_secrets=False)


def test_ordinary_keys_pass() -> None:
    assert not is_secret_key("timeout_s")
    assert redact_item("timeout_s", 2.5) == 2.5


def test_a_registered_value_is_masked_inside_any_text_longest_first() -> None:
    register_secret("hunter2-long")
    register_secret("hunter2")
    register_secret("abc")  # too short to be worth masking
    assert redact_text("pw=hunter2-long, short=hunter2, abc") == f"pw={REDACTED}, short={REDACTED}, abc"


def test_a_service_url_keeps_all_but_its_password() -> None:
    assert mask_password("redis://user:pw@10.0.0.1:6379/2") == f"redis://user:{REDACTED}@10.0.0.1:6379/2"
    assert mask_password("redis://:pw@h:1/0") == f"redis://:{REDACTED}@h:1/0"
    assert mask_password("redis://h:1/0") == "redis://h:1/0"


def test_a_node_url_keeps_only_scheme_host_and_port() -> None:
    assert redact_url("https://u:p@eth.example:8545/v3/KEY?apikey=K#f") == "https://eth.example:8545/…"
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert redact_url("wss://node.example/") == "wss://node.example/"
