"""The rules that span keys, checked once a configuration has its types: each failure is a
``ConfigError`` naming the key and where its value came from.

``check(cfg, sources)``: the shard is below the shard count; live mode has an executor; an
HTTP executor has a URL; a blocking read is shorter than the Redis socket timeout; relative
price guards are fractions and money guards are not negative; the profile exists; a generic
feed source says where its price and symbol are, and no other kind does; source names are
distinct; a chain venue has a node URL, a contract address, market ids and a fee cap of the
right form, and the profile of its protocol; retention's segments and interval fit its window.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal

from keeper.app.config.schema import Config
from keeper.errors import ConfigError
from keeper.store.retention import CAP_MIN

__all__ = ["check"]

Origin = Callable[[str], str]


def check(cfg: Config, sources: Mapping[str, str]) -> None:
    """Raise ``ConfigError`` for the first rule ``cfg`` breaks (see the module docstring);
    ``sources`` maps a dotted key to where its value came from."""

    def origin(key: str) -> str:
        return sources.get(key, "defaults")

    if cfg.keeper.shard >= cfg.keeper.shards:
        raise ConfigError(f"keeper.shard: {cfg.keeper.shard} is not below keeper.shards "
                          f"{cfg.keeper.shards} (from {origin('keeper.shard')})")
    if cfg.keeper.mode == "live" and cfg.execution.executor == "paper":
        raise ConfigError("keeper.mode: 'live' needs execution.executor 'http', 'sim' or 'chain' "
                          f"(from {origin('keeper.mode')})")
    _check_venue(cfg, origin)
    _check_retention(cfg, origin)
    if cfg.execution.executor in ("http", "sim") and not cfg.execution.url:
        raise ConfigError(f"execution.url: required by executor {cfg.execution.executor!r} "
                          f"(from {origin('execution.executor')})")
    if cfg.redis.block_ms / 1000 >= cfg.redis.socket_timeout_s:
        # redis-py raises a timeout when a blocking read outlasts the socket timeout
        raise ConfigError(f"redis.block_ms: {cfg.redis.block_ms} ms must be below redis."
                          f"socket_timeout_s ({cfg.redis.socket_timeout_s} s) "
                          f"(from {origin('redis.block_ms')})")
    decimal_ranges = (("feeds.max_jump", cfg.feeds.max_jump, False), ("feeds.max_deviation",
                      cfg.feeds.max_deviation, False), ("guards.max_notional", cfg.guards.max_notional,
                      True), ("guards.min_profit", cfg.guards.min_profit, True))
    for key, value, unbounded in decimal_ranges:
        ok = value.is_finite() and (value >= 0 if unbounded else Decimal(0) < value <= 1)
        if not ok:
            want = "a decimal >= 0" if unbounded else "a fraction in (0, 1]"
            raise ConfigError(f"{key}: expected {want}, got {str(value)!r} (from {origin(key)})")
    from keeper.domain.margin.profiles import PROFILE_NAMES

    if cfg.keeper.profile not in PROFILE_NAMES:
        raise ConfigError(f"keeper.profile: unknown profile {cfg.keeper.profile!r}; known: "
                          f"{', '.join(PROFILE_NAMES)} (from {origin('keeper.profile')})")
    for i, src in enumerate(cfg.feeds.sources):
        paths = {"price_path": src.price_path, "symbol_path": src.symbol_path, "time_path": src.time_path}
        key = f"feeds.sources[{i}]"
        if src.kind != "generic":
            given = [k for k, v in paths.items() if v]
            if given:
                raise ConfigError(f"{key}.{given[0]}: only for kind 'generic' (this source is "
                                  f"{src.kind!r}) (from {origin('feeds.sources')})")
        elif not src.price_path:
            raise ConfigError(f"{key}.price_path: a generic source needs the path of its price "
                              f"(e.g. \"data.price\") (from {origin('feeds.sources')})")
        elif not src.symbol_path and len(src.symbols) != 1:
            raise ConfigError(f"{key}.symbol_path: a generic source of {len(src.symbols)} symbols needs "
                              f"the path of the symbol in its messages (from {origin('feeds.sources')})")
    names = [s.source_name for s in cfg.feeds.sources]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(f"feeds.sources[{i}].name: duplicate source name {n!r}; give each "
                              f"source of the same kind a distinct name (from {origin('feeds.sources')})")


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_MARKET_ID = re.compile(r"0x[0-9a-fA-F]{64}")


def _check_retention(cfg: Config, origin: Origin) -> None:
    r = cfg.retention
    if r.min_segment_entries > r.segment_entries:
        raise ConfigError(f"retention.min_segment_entries: {r.min_segment_entries} is above "
                          f"retention.segment_entries {r.segment_entries} "
                          f"(from {origin('retention.min_segment_entries')})")
    if r.cap_entries and (r.cap_entries < CAP_MIN or r.cap_entries < r.max_entries):
        raise ConfigError(f"retention.cap_entries: {r.cap_entries} is below "
                          f"{max(CAP_MIN, r.max_entries)} (at least {CAP_MIN}, and not below "
                          f"retention.max_entries; 0: no cap) (from {origin('retention.cap_entries')})")
    if r.interval_s > r.hot_window_s:
        raise ConfigError(f"retention.interval_s: {r.interval_s} s is longer than retention."
                          f"hot_window_s {r.hot_window_s} s: the hot log would grow past its window "
                          f"between passes (from {origin('retention.interval_s')})")


def _check_venue(cfg: Config, origin: Origin) -> None:
    v = cfg.venue
    if cfg.execution.executor == "chain" and v.kind != "evm":
        raise ConfigError(f"execution.executor: 'chain' needs venue.kind = 'evm' "
                          f"(from {origin('execution.executor')})")
    if v.kind != "evm":
        return
    if not v.rpc_url.startswith(("http://", "https://")):
        raise ConfigError(f"venue.rpc_url: an http(s) JSON-RPC URL is required for venue.kind 'evm' "
                          f"(from {origin('venue.rpc_url')})")
    if v.ws_url and not v.ws_url.startswith(("ws://", "wss://")):
        raise ConfigError(f"venue.ws_url: expected a ws:// or wss:// URL (from {origin('venue.ws_url')})")
    if not _ADDRESS.fullmatch(v.address):
        raise ConfigError(f"venue.address: expected the contract's 0x-prefixed 20-byte address, got "
                          f"{v.address!r} (from {origin('venue.address')})")
    for i, m in enumerate(v.markets):
        if not _MARKET_ID.fullmatch(m):
            raise ConfigError(f"venue.markets[{i}]: expected a 0x-prefixed 32-byte market id, got {m!r} "
                              f"(from {origin('venue.markets')})")
    if cfg.keeper.profile != v.protocol:
        raise ConfigError(f"keeper.profile: venue.protocol {v.protocol!r} is decided by the profile of "
                          f"the same name, not {cfg.keeper.profile!r} (from {origin('keeper.profile')})")
    if not (v.max_fee_gwei.is_finite() and v.max_fee_gwei > 0):
        raise ConfigError(f"venue.max_fee_gwei: expected a decimal > 0 (from {origin('venue.max_fee_gwei')})")
