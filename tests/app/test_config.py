"""Config: layering, strictness (errors name the key and the source), secrets only from the env."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from keeper.app.config import Config, Secret, load_config
from keeper.errors import ConfigError
from keeper.redaction import clear_secrets

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _forget_secrets():
    yield
    clear_secrets()


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_are_safe_without_any_file():
    cfg = load_config(None, env={})
    assert cfg.keeper.mode == "paper"
    assert cfg.execution.executor == "paper"
    assert cfg.admin.host == "127.0.0.1"
    assert cfg.redis_url() is None  # no REDIS_URL: the daemon runs its own redis-server


@pytest.mark.parametrize("name", ["default", "demo", "hyperliquid", "aave-v3.3"])
def test_shipped_config_files_load(name):
    cfg = load_config(ROOT / "config" / f"{name}.toml", env={})
    assert cfg.sources[-1].endswith(f"{name}.toml")
    if name == "default":
        # the default connects to no feed it was not told about: an operator names the sources
        assert cfg.feeds.sources == ()
    else:
        assert cfg.feeds.sources, "every venue config names its price sources"


def test_include_layers_and_the_including_file_wins(tmp_path):
    write(tmp_path, "base.toml", '[execution]\ntimeout_s = 3.0\nmax_attempts = 7\n[log]\nlevel = "debug"\n')
    top = write(tmp_path, "top.toml", 'include = "base.toml"\n[execution]\ntimeout_s = 1.5\n')
    cfg = load_config(top, env={})
    assert cfg.execution.timeout_s == 1.5
    assert cfg.execution.max_attempts == 7
    assert cfg.log.level == "debug"
    assert [Path(s).name for s in cfg.sources] == ["base.toml", "top.toml"]


def test_include_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.toml", 'include = "b.toml"\n')
    write(tmp_path, "b.toml", 'include = "a.toml"\n')
    with pytest.raises(ConfigError, match="include: cycle"):
        load_config(tmp_path / "a.toml", env={})


def test_unknown_key_in_a_file_names_the_key_and_the_file(tmp_path):
    p = write(tmp_path, "c.toml", "[admin]\nprot = 8080\n")
    with pytest.raises(ConfigError) as err:
        load_config(p, env={})
    assert str(err.value) == f"admin.prot: unknown key (from {p})"


def test_unknown_section_names_it(tmp_path):
    p = write(tmp_path, "c.toml", "[executor]\nurl = 'x'\n")
    with pytest.raises(ConfigError, match=r"^executor: unknown key"):
        load_config(p, env={})


def test_unknown_key_inside_an_array_of_tables_names_the_index(tmp_path):
    p = write(tmp_path, "c.toml", '[[feeds.sources]]\nkind = "pyth"\nurl = "wss://x"\n'
                                 'symbols = { ETH = "0xff" }\nsymbol = "x"\n')
    with pytest.raises(ConfigError, match=r"^feeds\.sources\[0\]\.symbol: unknown key"):
        load_config(p, env={})


def test_bad_value_in_a_file_names_key_expectation_value_and_file(tmp_path):
    p = write(tmp_path, "c.toml", '[execution]\ntimeout_s = "abc"\n')
    with pytest.raises(ConfigError) as err:
        load_config(p, env={})
    assert str(err.value) == f"execution.timeout_s: expected a number > 0, got 'abc' (from {p})"


def test_bad_enum_lists_the_choices(tmp_path):
    p = write(tmp_path, "c.toml", '[feeds]\nsources = [{ kind = "kraken", url = "wss://x", symbols = {} }]\n')
    want = r"^feeds\.sources\[0\]\.kind: expected one of 'binance'.*got 'kraken'"
    with pytest.raises(ConfigError, match=want):
        load_config(p, env={})


def test_bad_env_override_names_the_key_and_the_variable():
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"KEEPER_EXECUTION__TIMEOUT_S": "abc"})
    assert str(err.value) == ("execution.timeout_s: expected a number > 0, got 'abc' "
                              "(from env KEEPER_EXECUTION__TIMEOUT_S)")


def test_env_override_with_a_typo_is_an_error_not_ignored():
    want = r"^execution\.timeout: unknown key \(from env KEEPER_EXECUTION__TIMEOUT\)"
    with pytest.raises(ConfigError, match=want):
        load_config(None, env={"KEEPER_EXECUTION__TIMEOUT": "2"})


def test_env_overrides_win_over_files_and_are_typed(tmp_path):
    p = write(tmp_path, "c.toml", '[execution]\nexecutor = "http"\nurl = "http://127.0.0.1:1"\n'
                                 'timeout_s = 1.0\n[guards]\nmin_profit = "1"\n')
    cfg = load_config(p, env={"KEEPER_EXECUTION__TIMEOUT_S": "2.5", "KEEPER_GUARDS__MIN_PROFIT": "0.10",
                              "KEEPER_ADMIN__ENABLED": "false", "KEEPER_LOG__LEVEL": "debug",
                              "KEEPER_KEEPER__PROFILE": "compound-v3",
                              "KEEPER_SHARED_DIR": "/elsewhere"})  # not an override: no "__"
    assert cfg.execution.timeout_s == 2.5
    assert cfg.guards.min_profit == Decimal("0.10")
    assert cfg.admin.enabled is False
    assert cfg.log.level == "debug"
    assert cfg.keeper.profile == "compound-v3"


def test_env_override_can_replace_the_feed_sources():
    cfg = load_config(None, env={"KEEPER_FEEDS__SOURCES":
                                 '[{kind = "generic", url = "ws://127.0.0.1:1", symbols = {X = "x"}, '
                                 'price_path = "p"}]'})
    assert [(s.kind, s.symbols) for s in cfg.feeds.sources] == [("generic", {"X": "x"})]
    assert cfg.feeds.sources_for("X")[0][1] == "x"


@pytest.mark.parametrize(("text", "key"), [
    ('[admin]\ntoken = "s3cret-token"\n', "admin.token"),
    ('[execution]\nhmac_secret = "abcd"\n', "execution.hmac_secret"),
    ('[redis]\npassword = "pw"\n', "redis.password"),
    ('[secrets]\nadmin_token = "x"\n', "secrets"),
])
def test_a_secret_in_a_file_is_an_error_naming_the_key(tmp_path, text, key):
    p = write(tmp_path, "c.toml", text)
    with pytest.raises(ConfigError) as err:
        load_config(p, env={})
    msg = str(err.value)
    assert msg.startswith(f"{key}: ")
    assert "environment" in msg
    assert "s3cret-token" not in msg and "abcd" not in msg


def test_a_redis_url_with_a_password_in_a_file_is_an_error(tmp_path):
    p = write(tmp_path, "c.toml", '[redis]\nurl = "redis://:hunter2@127.0.0.1:6390/0"\n')
    with pytest.raises(ConfigError, match=r"^redis\.url: carries a password") as err:
        load_config(p, env={})
    assert "hunter2" not in str(err.value)


def test_cross_field_rules():
    with pytest.raises(ConfigError, match=r"^keeper\.mode: 'live' needs"):
        load_config(None, env={"KEEPER_KEEPER__MODE": "live"})
    with pytest.raises(ConfigError, match=r"^execution\.url: required"):
        load_config(None, env={"KEEPER_EXECUTION__EXECUTOR": "http"})
    with pytest.raises(ConfigError, match=r"^redis\.block_ms: .* below"):
        load_config(None, env={"KEEPER_REDIS__BLOCK_MS": "6000"})
    with pytest.raises(ConfigError, match=r"^feeds\.max_jump: expected a fraction"):
        load_config(None, env={"KEEPER_FEEDS__MAX_JUMP": '"1.5"'})
    with pytest.raises(ConfigError, match=r"^keeper\.shard: 2 is not below"):
        load_config(None, env={"KEEPER_KEEPER__SHARD": "2", "KEEPER_KEEPER__SHARDS": "2"})


def test_a_chain_venue_is_checked_at_start_naming_the_key():
    base = {"KEEPER_KEEPER__PROFILE": "morpho-blue", "KEEPER_VENUE__KIND": "evm",
            "KEEPER_VENUE__RPC_URL": "http://127.0.0.1:8545", "KEEPER_VENUE__ADDRESS": "0x" + "ab" * 20}
    assert load_config(None, env=base).keeper_params().chain == "morpho-blue"
    with pytest.raises(ConfigError, match=r"^venue\.rpc_url: an http"):
        load_config(None, env={**base, "KEEPER_VENUE__RPC_URL": "127.0.0.1:8545"})
    with pytest.raises(ConfigError, match=r"^venue\.address: expected"):
        load_config(None, env={**base, "KEEPER_VENUE__ADDRESS": "0x1234"})
    with pytest.raises(ConfigError, match=r"^venue\.markets\[0\]: expected"):
        load_config(None, env={**base, "KEEPER_VENUE__MARKETS": '["0x12"]'})
    with pytest.raises(ConfigError, match=r"^keeper\.profile: venue\.protocol"):
        load_config(None, env={**base, "KEEPER_KEEPER__PROFILE": "aave-v3.0"})
    with pytest.raises(ConfigError, match=r"^execution\.executor: 'chain' needs venue\.kind"):
        load_config(None, env={"KEEPER_EXECUTION__EXECUTOR": "chain"})
    dump = load_config(None, env={**base, "KEEPER_VENUE__RPC_URL": "https://node.example/v2/SECRETKEY"}).dump()
    assert "SECRETKEY" not in str(dump)


def test_secrets_come_from_the_env_and_hide_in_repr_and_dump():
    env = {"KEEPER_HMAC_SECRET": "hmac-AAAA-1111", "KEEPER_ADMIN_TOKEN": "admin-BBBB-2222",
           "KEEPER_REDIS_PASSWORD": "redis-CCCC-3333", "REDIS_URL": "redis://127.0.0.1:6390/0",
           "KEEPER_CHAIN_KEY": "0x" + "4d" * 32}
    cfg = load_config(None, env=env)
    assert cfg.secrets.admin_token == Secret("admin-BBBB-2222")
    assert cfg.secrets.admin_token.reveal() == "admin-BBBB-2222"
    assert cfg.redis_url() == "redis://:redis-CCCC-3333@127.0.0.1:6390/0"
    for text in (repr(cfg), str(cfg), repr(cfg.secrets), str(cfg.dump())):
        for value in env.values():
            if "127.0.0.1" not in value:
                assert value not in text
    dump = cfg.dump()
    assert dump["secrets"] == {"hmac_secret": "***", "admin_token": "***", "redis_password": "***",
                               "redis_url": "***", "chain_key": "***"}
    assert dump["redis"]["effective_url"] == "redis://:***@127.0.0.1:6390/0"


def test_venue_secret_is_accepted_as_the_hmac_secret():
    cfg = load_config(None, env={"KEEPER_VENUE_SECRET": "venue-secret-1"})
    assert cfg.secrets.hmac_secret == Secret("venue-secret-1")


def test_config_hash_follows_decision_relevant_config_only():
    base = load_config(None, env={})
    same = load_config(None, env={"KEEPER_ADMIN_TOKEN": "tok-123456", "REDIS_URL": "redis://h:1/0"})
    other = load_config(None, env={"KEEPER_GUARDS__MIN_PROFIT": "1"})
    assert base.config_hash() == same.config_hash()
    assert base.config_hash() != other.config_hash()
    assert len(base.config_hash()) == 64


def test_config_is_frozen():
    cfg = load_config(None, env={})
    with pytest.raises(AttributeError):
        cfg.execution.timeout_s = 9.0  # type: ignore[misc]
    assert isinstance(cfg, Config)


def test_malformed_toml_names_the_file(tmp_path):
    p = write(tmp_path, "c.toml", "[admin\nport = 1\n")
    with pytest.raises(ConfigError, match=r"c\.toml: not valid TOML"):
        load_config(p, env={})


def test_unknown_profile_lists_the_known_ones():
    want = r"^keeper\.profile: unknown profile 'bitmex'; known: .*hyperliquid"
    with pytest.raises(ConfigError, match=want):
        load_config(None, env={"KEEPER_KEEPER__PROFILE": "bitmex"})


def test_keeper_params_carry_mode_caps_and_ttl():
    cfg = load_config(None, env={"KEEPER_KEEPER__PROFILE": "aave-v3.3", "KEEPER_GUARDS__MIN_PROFIT": "5",
                                 "KEEPER_GUARDS__INTERVAL_S": "30", "KEEPER_EXECUTION__INTENT_TTL_S": "2.5",
                                 "KEEPER_GUARDS__MAX_LIQUIDATIONS": "7"})
    p = cfg.keeper_params()
    assert (p.profile, p.mode, p.min_profit) == ("aave-v3.3", "paper", Decimal("5"))
    assert (p.cap_count, p.cap_interval_us, p.intent_ttl_us) == (7, 30_000_000, 2_500_000)
    assert p.cap_notional == Decimal("10000000")


def test_an_error_in_an_included_file_names_that_file(tmp_path):
    base = write(tmp_path, "base.toml", "[snapshots]\nevery_events = 0\n")
    top = write(tmp_path, "top.toml", 'include = "base.toml"\n[log]\nlevel = "info"\n')
    with pytest.raises(ConfigError) as err:
        load_config(top, env={})
    assert str(err.value) == f"snapshots.every_events: expected an integer >= 1, got 0 (from {base})"


def test_a_later_file_takes_over_the_blame_for_a_key_it_sets(tmp_path):
    write(tmp_path, "base.toml", "[snapshots]\nevery_events = 10\n")
    top = write(tmp_path, "top.toml", 'include = "base.toml"\n[snapshots]\nevery_events = -1\n')
    with pytest.raises(ConfigError, match=rf"got -1 \(from {top}\)$"):
        load_config(top, env={})


def test_env_variable_names_are_case_insensitive():
    cfg = load_config(None, env={"keeper_log__level": "warning"})
    assert cfg.log.level == "warning"


def test_retention_hard_cap_is_checked_in_one_line(tmp_path):
    p = tmp_path / "k.toml"
    p.write_text("[retention]\ncap_entries = 500\n")
    with pytest.raises(ConfigError, match=r"retention.cap_entries: 500 is below 10000 .*k.toml"):
        load_config(p, env={})
    p.write_text("[retention]\ncap_entries = 50000\nmax_entries = 60000\nin_daemon = false\n")
    with pytest.raises(ConfigError, match=r"not below retention\.max_entries"):
        load_config(p, env={})
    p.write_text("[retention]\ncap_entries = 50000\nin_daemon = false\n")
    cfg = load_config(p, env={})
    assert cfg.retention.cap_entries == 50_000 and not cfg.retention.in_daemon
