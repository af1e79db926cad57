"""The configuration's schema: its sections, their types, defaults and meaning, and ``Config``.

Every section is a frozen ``msgspec.Struct`` that rejects unknown fields; ``Config`` holds one
of each, the secrets read from the environment (``Secrets``, each a ``Secret`` whose ``str``
and ``repr`` are ``***``) and the files read. ``Config.dump()`` is the effective configuration
as JSON-able data with every secret redacted (``keeper.redaction``); ``config_hash()`` hashes
what two machines running one configuration share. Build a ``Config`` with
``keeper.app.config.load_config``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from keeper.redaction import REDACTED, mask_password, redact_url

if TYPE_CHECKING:
    from keeper.domain.decide import KeeperParams

__all__ = [
    "AdminSection",
    "Config",
    "ExecutionSection",
    "FeedSource",
    "FeedsSection",
    "GuardsSection",
    "KeeperSection",
    "LogSection",
    "NonNegInt",
    "Port",
    "Positive",
    "PositiveInt",
    "RedisSection",
    "RetentionSection",
    "Secret",
    "Secrets",
    "SnapshotsSection",
    "VenueSection",
]

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
    sizing: Literal["least", "largest"] = "largest"
    """Where the venue leaves the size to the liquidator (perp profiles sized ``restore``):
    ``largest``, the largest liquidation the venue accepts (the whole bucket in one request: no
    position's loss covered by the venue while another's profit could pay it; what pays a
    liquidator most), or ``least``, the least that restores health (``KeeperParams.sizing``)."""
    first_chunk: PositiveInt = 8
    """A burst's first chunk (``KeeperParams.first_chunk``): the most at risk buckets checked,
    recorded and handed to the runner before the rest are checked; 8, the runner's first
    request (``HANDOFF_FIRST``). With caps it decides which buckets spend the cap first."""
    shard: NonNegInt = 0
    """Without ``sharded``: the one shard's log this process runs (a static split, e.g. one
    venue a shard)."""
    shards: PositiveInt = 1
    """The shard count (accounts split over this many shards by a stable hash)."""
    sharded: bool = False
    """The sharded mode (``keeper.app.sharded``, ``keeper run --shards N``): every one of
    ``shards`` shards owned by one process at a time under a lease, taken over when it dies."""
    lease_ttl_ms: PositiveInt = 10_000
    """The sharded mode's lease TTL: a dead process's shards are taken over within about this
    plus a third of it."""
    wait_replicas: Literal["auto"] | NonNegInt = "auto"
    """The sharded mode: how many replicas must hold a shard's log entry before its keeper and
    runner act on it, and before their own appends (intents, submissions, outcomes) count as done
    (``keeper.store.replicated``). ``auto``: 1 on a Redis Cluster, 0 on one Redis."""
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
    keep_warm_s: float = 10.0
    """After this long without a request, the HTTP executors send the venue ``HEAD <url>`` on a
    few connections at once (``HttpExecutor.keep_warm``), so that they stay open for the next
    crash's first submissions (aiohttp keeps an idle connection 15 s); 0: never."""


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
    ``cap_entries`` (0: none) is the hot log's hard cap: beyond it the oldest entries go even
    past a projector's snapshot (archived first; the projector reads them from the archive), so
    Redis stays bounded when the keeper falls far behind; never past a consumer group. The
    keeper process runs the passes when ``in_daemon``; false: a separate ``keeper log archive
    --follow --trim`` process does (the Procfile's ``retention`` line), off the keeper's core.
    """

    enabled: bool = True
    in_daemon: bool = True
    cap_entries: NonNegInt = 0
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
            reject_backoff_max_us=round(self.guards.reject_backoff_max_s * 1_000_000),
            sizing=self.keeper.sizing, first_chunk=self.keeper.first_chunk)

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
