"""The daemon's configuration: TOML files and environment overrides, frozen and typed.

Layering (later wins): the defaults in this module <- the TOML file given by ``--config``
(which may ``include`` other files first) <- environment overrides. The result is validated once
at start; an unknown key or a bad value raises ``ConfigError`` naming the full key and where the
value came from::

    execution.timeout_s: expected `float` > 0.0, got 'abc' (from env KEEPER_EXECUTION__TIMEOUT_S)
    admin.prot: unknown key (from config/default.toml)

Files
    ``include = "default.toml"`` (or a list) at the top of a file loads those files first,
    relative to the including file; the including file's own keys then win. Tables merge key by
    key; arrays (``[[feeds.sources]]``) replace as a whole.

Environment overrides
    ``KEEPER_<SECTION>__<KEY>=value`` sets ``<section>.<key>`` (case-insensitive, double
    underscore between levels, e.g. ``KEEPER_EXECUTION__TIMEOUT_S=2.5``,
    ``KEEPER_LOG__LEVEL=debug``). The value is read as a TOML value when it parses as one
    (``2.5``, ``true``, ``["a", "b"]``) and as a plain string otherwise, or always as a string
    when the key is a string; it is then type-checked like a file value. An override naming an
    unknown key is an error, so a typo never passes silently. Only variables with ``__`` are
    overrides; ``KEEPER_SHARED_DIR`` and the like are left alone.

Secrets come only from the environment, never from a file (a key that looks like one in a file
is an error naming it): ``KEEPER_HMAC_SECRET`` (falls back to ``KEEPER_VENUE_SECRET``, the
variable the HTTP executor reads), ``KEEPER_ADMIN_TOKEN``, ``KEEPER_REDIS_PASSWORD`` and
``REDIS_URL`` (which may carry credentials), and ``KEEPER_CHAIN_KEY`` (the liquidator's
private key on a chain venue). They are held in ``Secret`` (``repr``/``str`` are
``***``), registered with the log redactor, and shown as ``***`` by ``Config.dump()``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit, urlunsplit

import msgspec

from keeper.errors import ConfigError
from keeper.redaction import REDACTED, is_secret_key, mask_password, redact_url, register_secret

if TYPE_CHECKING:
    from keeper.domain.decide import KeeperParams

ENV_PREFIX = "KEEPER_"
DEFAULT_FILE = Path("config/default.toml")

Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class Secret:
    """A secret value: ``str``/``repr`` are ``***``; ``reveal()`` is the only way to the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself: pass it to the one client that needs it, never to a log call."""
        return self._value

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


@dataclass(frozen=True)
class Secrets:
    """Secrets from the environment; ``None`` where the variable is unset or empty."""

    hmac_secret: Secret | None = None
    admin_token: Secret | None = None
    redis_password: Secret | None = None
    redis_url: Secret | None = None
    chain_key: Secret | None = None

    def values(self) -> list[str]:
        """Every secret value that is set (for the log redactor)."""
        return [s.reveal() for s in (self.hmac_secret, self.admin_token, self.redis_password,
                                     self.redis_url, self.chain_key) if s is not None]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class KeeperSection(_Section, frozen=True):
    """``[keeper]``: which venue profile, paper or live, which shard, how much per batch."""

    profile: str = "generic-perp"
    mode: Literal["paper", "live"] = "paper"
    shard: NonNegInt = 0
    shards: PositiveInt = 1
    batch_size: PositiveInt = 1000
    state_dir: str = ".keeper"
    shutdown_grace_s: Positive = 50.0
    """After SIGTERM the process ends within this many seconds, whatever it waits for (a graceful
    stop first; past the deadline it stops its private Redis and exits 1). Keep it below the
    supervisor's own (systemd ``TimeoutStopSec``, compose ``stop_grace_period``: 60 s)."""


class RedisSection(_Section, frozen=True):
    """``[redis]``: ``url`` empty means: start and own a private redis-server under ``data_dir``."""

    url: str = ""
    data_dir: str = ".keeper/redis"
    appendfsync: Literal["always", "everysec", "no"] = "everysec"
    socket_timeout_s: Positive = 5.0
    block_ms: PositiveInt = 1000


class SnapshotsSection(_Section, frozen=True):
    """``[snapshots]``: write one every ``every_events`` applied events or ``interval_s`` seconds."""

    every_events: PositiveInt = 100_000
    interval_s: Positive = 60.0
    keep: PositiveInt = 2


class FeedSource(_Section, frozen=True):
    """One ``[[feeds.sources]]``: a price source and its symbol per market (market -> symbol)."""

    kind: Literal["binance", "bybit", "hyperliquid", "pyth", "coinbase", "generic"]
    url: str
    symbols: dict[str, str]
    name: str = ""
    price_path: str = ""
    """``generic`` only: where a message keeps its price, a dotted path (``data.0.px``)."""
    symbol_path: str = ""
    """``generic`` only: where it keeps the symbol (not needed for a source of one symbol)."""
    time_path: str = ""
    """``generic`` only: where it keeps its publish time (empty: the time it was received)."""
    time_unit: Literal["s", "ms", "us", "ns", "iso"] = "ms"
    """``generic`` only: the unit of ``time_path``."""
    subscribe: tuple[str, ...] = ()
    """Frames sent after each connect in place of the kind's own subscription (see
    ``keeper.app.daemon.subscriptions``); ``generic`` sends only these."""

    @property
    def source_name(self) -> str:
        """``name`` or, when unset, ``kind``."""
        return self.name or self.kind


class FeedsSection(_Section, frozen=True):
    """``[feeds]``: sources and the price guards (relative moves as fractions, 0.2 is 20%)."""

    staleness_ms: PositiveInt = 5000
    max_jump: Decimal = Decimal("0.2")
    max_deviation: Decimal = Decimal("0.05")
    jump_confirmations: PositiveInt = 3
    sources: tuple[FeedSource, ...] = ()
    accounts_url: str = ""
    """The venue's account-event websocket (``ws://host/accounts`` on the reference venue) that
    the ingest role reads; empty: no account stream."""
    fixed_prices: dict[str, Decimal] = msgspec.field(default_factory=dict)
    """Symbols priced by definition (``USDC = "1"``): the feeds role records each once at start,
    so buckets holding them can be valued."""

    def markets(self) -> list[str]:
        """Every market some source prices, sorted."""
        return sorted({m for s in self.sources for m in s.symbols})

    def sources_for(self, market: str) -> list[tuple[FeedSource, str]]:
        """The sources pricing ``market``, each with its own symbol for it, in file order."""
        return [(s, s.symbols[market]) for s in self.sources if market in s.symbols]


class ExecutionSection(_Section, frozen=True):
    """``[execution]``: where decided liquidations go (``paper`` submits nothing)."""

    executor: Literal["paper", "http", "sim", "chain"] = "paper"
    url: str = ""
    timeout_s: Positive = 2.0
    connect_timeout_s: Positive = 1.0
    max_attempts: PositiveInt = 5
    intent_ttl_s: Positive = 30.0
    status_url: str = ""
    """Where the HTTP executors ask what the venue holds under an intent id (``GET``); empty:
    ``url`` + ``/{intent_id}`` (the reference venue's ``/liquidations/{intent_id}``). A
    ``{intent_id}`` placeholder is replaced by the percent-encoded id."""
    retry_after_max_s: Positive = 5.0
    """The longest ``Retry-After`` (429/503) a submission waits out; a longer one gives up at
    once and the intent is taken up again later."""


class VenueSection(_Section, frozen=True):
    """``[venue]``: a chain venue (``kind = "evm"``) the keeper reads and liquidates on its own;
    ``none`` (the default): the venue of ``[feeds]`` and ``[execution]``.

    ``rpc_url``/``ws_url``: the node (HTTP JSON-RPC; websocket for new heads, optional);
    ``address``: the protocol's contract (Morpho Blue: Morpho itself; Aave v3.0: its
    ``PoolAddressesProvider``); ``markets``: Morpho market ids to watch (empty: all);
    ``confirmations``: blocks a block must be under the head before it is read; ``start_block``:
    where a fresh log starts reading; ``lookahead_s``: interest planned past the block
    (``KeeperParams.lookahead_s``); gas: the estimate times ``gas_margin``, at most ``gas_cap``,
    fees at most ``max_fee_gwei``; a transaction not mined within ``replace_after_s`` is
    replaced with the same nonce and a higher fee. The liquidator's key is ``KEEPER_CHAIN_KEY``.
    """

    kind: Literal["none", "evm"] = "none"
    protocol: Literal["morpho-blue", "aave-v3.0"] = "morpho-blue"
    rpc_url: str = ""
    ws_url: str = ""
    chain_id: PositiveInt = 1
    address: str = ""
    markets: tuple[str, ...] = ()
    confirmations: NonNegInt = 0
    start_block: NonNegInt = 0
    range_blocks: PositiveInt = 2000
    poll_s: Positive = 1.0
    lookahead_s: NonNegInt = 12
    gas_margin: Annotated[float, msgspec.Meta(ge=1.0)] = 1.5
    gas_cap: PositiveInt = 2_000_000
    max_fee_gwei: Decimal = Decimal("500")
    replace_after_s: Positive = 30.0


class GuardsSection(_Section, frozen=True):
    """``[guards]``: caps per ``interval_s`` window, the least profit worth a liquidation, and
    the restraint after a rejection (``reject_backoff_s`` doubling per rejection in a row, up to
    ``reject_backoff_max_s``)."""

    interval_s: Positive = 60.0
    max_liquidations: PositiveInt = 1000
    max_notional: Decimal = Decimal("10000000")
    min_profit: Decimal = Decimal("0")
    reject_backoff_s: Positive = 1.0
    reject_backoff_max_s: Positive = 60.0


class AdminSection(_Section, frozen=True):
    """``[admin]``: the admin HTTP server (loopback unless told otherwise; port 0 picks one)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 8321
    request_timeout_s: Positive = 5.0


class LogSection(_Section, frozen=True):
    """``[log]``: ``auto`` renders JSON unless stdout is a terminal."""

    format: Literal["json", "console", "auto"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class RetentionSection(_Section, frozen=True):
    """``[retention]``: the hot log in Redis is a bounded window (``keeper.store.retention``).

    Entries older than ``hot_window_s`` (and the oldest beyond ``max_entries``; 0: no cap) are
    archived to segment files under ``archive_dir`` (empty: ``<keeper.state_dir>/archive``),
    then trimmed, never past a projector's snapshot or a consumer group's position. Event ids
    count as duplicates for ``dedup_window_s`` after their entry (``keeper.store.dedup``). The
    daemon runs a pass every ``interval_s`` when ``enabled``; the dead-letter stream keeps about
    ``dead_max_entries``. Segments hold at most ``segment_entries``; a smaller trailing one waits
    until it holds ``min_segment_entries`` or its entries are twice the hot window old.
    """

    enabled: bool = True
    hot_window_s: Positive = 3600.0
    max_entries: NonNegInt = 0
    dedup_window_s: Positive = 86_400.0
    archive_dir: str = ""
    interval_s: Positive = 60.0
    dead_max_entries: PositiveInt = 100_000
    segment_entries: PositiveInt = 1_000_000
    min_segment_entries: PositiveInt = 10_000


class Config(_Section, frozen=True):
    """The effective configuration. Frozen; build it with ``load_config``."""

    keeper: KeeperSection = msgspec.field(default_factory=KeeperSection)
    redis: RedisSection = msgspec.field(default_factory=RedisSection)
    snapshots: SnapshotsSection = msgspec.field(default_factory=SnapshotsSection)
    feeds: FeedsSection = msgspec.field(default_factory=FeedsSection)
    execution: ExecutionSection = msgspec.field(default_factory=ExecutionSection)
    guards: GuardsSection = msgspec.field(default_factory=GuardsSection)
    venue: VenueSection = msgspec.field(default_factory=VenueSection)
    admin: AdminSection = msgspec.field(default_factory=AdminSection)
    log: LogSection = msgspec.field(default_factory=LogSection)
    retention: RetentionSection = msgspec.field(default_factory=RetentionSection)
    secrets: Secrets = Secrets()
    sources: tuple[str, ...] = ()
    """The files read, in order (for the run manifest and error messages)."""

    def redis_url(self) -> str | None:
        """The URL to connect to, credentials included; ``None`` means: run a private server.

        ``REDIS_URL`` wins over ``redis.url``; ``KEEPER_REDIS_PASSWORD`` is put into the URL when
        it carries no password of its own.
        """
        if self.secrets.redis_url is not None:
            url = self.secrets.redis_url.reveal()
        elif self.redis.url:
            url = self.redis.url
        else:
            return None
        pw = self.secrets.redis_password
        parts = urlsplit(url)
        if pw is None or parts.password:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:{pw.reveal()}@{host}"))

    def dump(self) -> dict[str, Any]:
        """The effective config as plain JSON-able data, every secret shown as ``***``.

        Safe for logs and the admin API. Decimals are strings.
        """
        data: dict[str, Any] = msgspec.to_builtins(self, builtin_types=(Decimal,), enc_hook=str)
        data.pop("secrets", None)
        for k in ("keeper", "redis", "snapshots", "feeds", "guards", "venue"):
            _decimals_to_str(data[k])
        url = self.redis_url()
        data["redis"]["effective_url"] = None if url is None else mask_password(url)
        data["secrets"] = {k: (None if getattr(self.secrets, k) is None else REDACTED)
                           for k in ("hmac_secret", "admin_token", "redis_password", "redis_url",
                                     "chain_key")}
        for k in ("rpc_url", "ws_url"):
            if data["venue"][k]:
                data["venue"][k] = redact_url(data["venue"][k])
        return data

    def keeper_params(self) -> KeeperParams:
        """The core's ``KeeperParams`` from ``[keeper]``, ``[guards]`` and ``[execution]``."""
        from keeper.domain.decide import KeeperParams

        return KeeperParams(
            profile=self.keeper.profile, mode=self.keeper.mode, min_profit=self.guards.min_profit,
            cap_count=self.guards.max_liquidations, cap_notional=self.guards.max_notional,
            cap_interval_us=round(self.guards.interval_s * 1_000_000),
            intent_ttl_us=round(self.execution.intent_ttl_s * 1_000_000),
            lookahead_s=self.venue.lookahead_s,
            chain=self.venue.protocol if self.venue.kind == "evm" else None,
            reject_backoff_us=round(self.guards.reject_backoff_s * 1_000_000),
            reject_backoff_max_us=round(self.guards.reject_backoff_max_s * 1_000_000))

    def config_hash(self) -> str:
        """sha256 (hex) of the effective non-secret config: equal configs hash equal.

        Which secrets are set, the files read and the Redis location are left out, so one
        configuration run on two machines hashes the same.
        """
        data = self.dump()
        data.pop("secrets")
        data.pop("sources")
        data["redis"].pop("effective_url")
        data["redis"].pop("url")
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def _decimals_to_str(obj: Any) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, Decimal):
                obj[k] = str(v)
            else:
                _decimals_to_str(v)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            if isinstance(v, Decimal):
                obj[i] = str(v)
            else:
                _decimals_to_str(v)


# --- loading -----------------------------------------------------------------------------------

Sources = dict[str, str]
"""Dotted key -> where its value came from (a file path or ``env NAME``)."""


def _read_toml(path: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], Sources, list[str]]:
    """One file with its includes merged under it; ``ConfigError`` for cycles and bad TOML."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"include: cycle {chain}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        where = f" (included from {seen[-1]})" if seen else ""
        raise ConfigError(f"config file {path} not found{where}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    include = raw.pop("include", [])
    if isinstance(include, str):
        include = [include]
    if not isinstance(include, list) or not all(isinstance(i, str) for i in include):
        raise ConfigError(f"include: expected a file name or a list of them (from {path})")
    merged: dict[str, Any] = {}
    sources: Sources = {}
    files: list[str] = []
    for inc in include:
        sub, sub_src, sub_files = _read_toml(path.parent / inc, (*seen, path))
        _merge(merged, sub, sources, sub_src)
        files += sub_files
    own_src: Sources = {}
    _record(raw, str(path), own_src, "")
    _merge(merged, raw, sources, own_src)
    files.append(str(path))
    return merged, sources, files


def _record(raw: Mapping[str, Any], origin: str, sources: Sources, prefix: str) -> None:
    for k, v in raw.items():
        key = f"{prefix}{k}"
        sources[key] = origin
        if isinstance(v, dict):
            _record(v, origin, sources, key + ".")


def _merge(into: dict[str, Any], new: Mapping[str, Any], sources: Sources, new_src: Sources,
           prefix: str = "") -> None:
    for k, v in new.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v, sources, new_src, key + ".")
            sources[key] = new_src.get(key, sources.get(key, ""))
            continue
        into[k] = v
        for s in [s for s in sources if s == key or s.startswith(key + ".")]:
            del sources[s]
        sources.update({s: o for s, o in new_src.items() if s == key or s.startswith(key + ".")})


def _reject_file_secrets(raw: Mapping[str, Any], sources: Sources, prefix: str = "") -> None:
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if prefix == "" and k == "secrets":
            raise ConfigError(f"secrets: secrets come only from the environment, not from a file "
                              f"(from {sources.get(key, '?')})")
        if is_secret_key(k):
            raise ConfigError(f"{key}: looks like a secret; secrets come only from the environment "
                              f"(KEEPER_HMAC_SECRET, KEEPER_ADMIN_TOKEN, KEEPER_REDIS_PASSWORD, "
                              f"REDIS_URL) (from {sources.get(key, '?')})")
        if isinstance(v, dict):
            _reject_file_secrets(v, sources, key + ".")
        elif isinstance(v, str) and key == "redis.url" and urlsplit(v).password:
            raise ConfigError(f"redis.url: carries a password; put it in KEEPER_REDIS_PASSWORD or "
                              f"REDIS_URL instead (from {sources.get(key, '?')})")


def _is_str(tp: Any) -> bool:
    hints = _unwrap(tp)
    if hints is str:
        return True
    return get_origin(hints) is Literal and all(isinstance(a, str) for a in get_args(hints))


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _env_overrides(env: Mapping[str, str], raw: dict[str, Any], sources: Sources) -> None:
    for name in sorted(env):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or "__" not in upper:
            continue
        path = [p.lower() for p in upper[len(ENV_PREFIX):].split("__")]
        key = ".".join(path)
        if any(is_secret_key(p) for p in path):
            raise ConfigError(f"{key}: secrets have their own variables (KEEPER_HMAC_SECRET, "
                              f"KEEPER_ADMIN_TOKEN, KEEPER_REDIS_PASSWORD, REDIS_URL) (from env {name})")
        tp = None if path[0] in ("secrets", "sources") else _type_at(list(path))
        if tp is None:
            raise ConfigError(f"{key}: unknown key (from env {name})")
        value: Any = env[name]
        if not _is_str(tp):
            # when it does not parse it stays a string: the type check names the key and value
            with contextlib.suppress(tomllib.TOMLDecodeError):
                value = tomllib.loads(f"v = {value}")["v"]
        node = raw
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{key}: {'.'.join(path[:-1])} is not a table (from env {name})")
            node = nxt
        node[path[-1]] = value
        sources[key] = f"env {name}"


_AT = re.compile(r"^(?P<msg>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")


def _lookup(raw: Any, path: list[str | int]) -> Any:
    node = raw
    for p in path:
        try:
            node = node[p]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _explain(exc: msgspec.ValidationError, raw: dict[str, Any], sources: Sources) -> ConfigError:
    text = str(exc)
    m = _AT.match(text)
    msg, where = (m["msg"], m["path"]) if m else (text, "")
    steps: list[str | int] = []
    for tok in re.findall(r"\.([^.\[]+)|\[(\d+)\]", where):
        steps.append(tok[0] if tok[0] else int(tok[1]))
    um = _UNKNOWN.match(msg)
    if um:
        steps.append(um["field"])
    key = ""
    for s in steps:
        key += f"[{s}]" if isinstance(s, int) else (f".{s}" if key else s)
    src_key = re.sub(r"\[\d+\]", "", key)
    origin = sources.get(src_key) or sources.get(src_key.rpartition(".")[0]) or "defaults"
    if um:
        return ConfigError(f"{key}: unknown key (from {origin})")
    value = _lookup(raw, steps)
    if msg.startswith("Invalid enum value"):
        choices = get_args(_unwrap(_type_at(steps)))
        msg = "expected one of " + ", ".join(repr(c) for c in choices)
    if ", got `" in msg:
        msg = msg.split(", got `")[0] + _bounds(_type_at(steps))
    for word, plain in _PLAIN.items():
        msg = msg.replace(word, plain)
    msg = re.sub(r"(\d+)\.0\b", r"\1", msg)
    got = "" if value is None else f", got {value!r}"
    return ConfigError(f"{key}: {msg[0].lower()}{msg[1:]}{got} (from {origin})")


_PLAIN = {"`float`": "a number", "`int`": "an integer", "`str`": "a string",
          "`bool`": "true or false", "`object`": "a table", "`array`": "an array",
          "`decimal`": "a decimal string"}


def _bounds(tp: Any) -> str:
    """`` > 0``-style text for the numeric bounds of an ``Annotated`` type (or ``""``)."""
    out = ""
    for meta in get_args(tp)[1:] if get_origin(tp) is Annotated else ():
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                out += f"{' and' if out else ''} {sym} {bound}"
    return out


def _type_at(steps: list[str] | list[str | int]) -> Any:
    """The annotated type at a path of ``Config`` (an array index steps into the item type);
    ``None`` when there is no such key."""
    tp: Any = Config
    for s in steps:
        inner = _unwrap(tp)
        if isinstance(s, int):
            tp = get_args(inner)[0] if get_args(inner) else None
        elif hasattr(inner, "__struct_fields__"):
            tp = get_type_hints(inner, include_extras=True).get(s)
        else:
            tp = None
        if tp is None:
            return None
    return tp


def _check(cfg: Config, sources: Sources) -> None:
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


def _check_retention(cfg: Config, origin: Any) -> None:
    r = cfg.retention
    if r.min_segment_entries > r.segment_entries:
        raise ConfigError(f"retention.min_segment_entries: {r.min_segment_entries} is above "
                          f"retention.segment_entries {r.segment_entries} "
                          f"(from {origin('retention.min_segment_entries')})")
    if r.interval_s > r.hot_window_s:
        raise ConfigError(f"retention.interval_s: {r.interval_s} s is longer than retention."
                          f"hot_window_s {r.hot_window_s} s: the hot log would grow past its window "
                          f"between passes (from {origin('retention.interval_s')})")


def _check_venue(cfg: Config, origin: Any) -> None:
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


def _secrets(env: Mapping[str, str]) -> Secrets:
    def get(*names: str) -> Secret | None:
        for n in names:
            v = env.get(n)
            if v:
                return Secret(v)
        return None

    return Secrets(hmac_secret=get("KEEPER_HMAC_SECRET", "KEEPER_VENUE_SECRET"),
                   admin_token=get("KEEPER_ADMIN_TOKEN"),
                   redis_password=get("KEEPER_REDIS_PASSWORD"),
                   redis_url=get("REDIS_URL"),
                   chain_key=get("KEEPER_CHAIN_KEY"))


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
                register_secrets: bool = True) -> Config:
    """Load, layer and validate the configuration.

    ``path`` is the ``--config`` file (``None``: built-in defaults only); ``env`` defaults to
    ``os.environ``. Raises ``ConfigError`` naming the key and its source on the first problem.
    With ``register_secrets`` the secret values are handed to the log redactor
    (``keeper.redaction.register_secret``) before anything is logged.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    sources: Sources = {}
    files: list[str] = []
    if path is not None:
        raw, sources, files = _read_toml(Path(path), ())
        _reject_file_secrets(raw, sources)
        if "sources" in raw:
            raise ConfigError(f"sources: unknown key (from {sources.get('sources', path)})")
    _env_overrides(env, raw, sources)
    try:
        cfg = msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise _explain(exc, raw, sources) from None
    _check(cfg, sources)
    secrets = _secrets(env)
    if register_secrets:
        for value in secrets.values():
            register_secret(value)
        pw = secrets.redis_url and urlsplit(secrets.redis_url.reveal()).password
        if pw:
            register_secret(pw)
    cfg = msgspec.structs.replace(cfg, secrets=secrets, sources=tuple(files))
    url = cfg.redis_url()
    if url:
        from keeper.app.datadir import check_redis_url

        check_redis_url(url, "REDIS_URL" if cfg.secrets.redis_url is not None
                        else f"redis.url (from {sources.get('redis.url', 'defaults')})")
    return cfg
