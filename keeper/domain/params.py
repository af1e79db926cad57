"""The keeper core's records: its parameters and its snapshot.

Kept apart from ``keeper.domain.decide`` (which re-exports ``KeeperParams``) because that module
is compiled where the build can (mypyc, see ``setup.py``) and msgspec reads a Struct's field types
from its class, which must stay an ordinary Python class.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from keeper.domain import events as ev
from keeper.domain import state as st
from keeper.domain.margin.profiles import SizingPolicy

__all__ = ["FIRST_CHUNK", "CoreSnapshot", "KeeperParams", "Mode"]

Mode = Literal["live", "paper"]


FIRST_CHUNK = 16
"""``KeeperParams.first_chunk``'s default: a burst's first chunk is smaller than the others, so
its most at risk are decided (and, streaming, sent) sooner."""


class KeeperParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the keeper decides. Frozen; unknown keys are rejected by name when decoded.

    - ``profile``: the margin profile (``keeper.domain.margin.get_profile``);
    - ``mode``: ``paper`` (default: decide and record, submit nothing) or ``live``;
    - ``min_profit``: USD the liquidation bonus (net of the protocol fee) must cover, checked
      only where the plan carries a bonus;
    - ``cap_count`` / ``cap_notional``: live decisions (count, USD notional) allowed per
      ``cap_interval_us`` of log time (``ts_event``); None: no cap;
    - ``intent_ttl_us``: the expiry rule the runner applies: an intent not submitted within
      this long after its trigger's ``ts_event`` is expired;
    - ``lookahead_s``: chain venues: amounts are planned on interest accrued this many seconds
      past the block that triggered them (the latest the transaction is expected to land);
    - ``reject_backoff_us`` / ``reject_backoff_max_us``: after the venue rejects a bucket's
      liquidation, the bucket is not decided again for ``reject_backoff_us * 2**(n-1)`` of log
      time (n: rejections in a row, capped at ``reject_backoff_max_us``); a confirmation or the
      bucket seen healthy starts the count again;
    - ``sizing``: where the venue leaves the size to the liquidator (a perp profile sized
      ``restore``), ``least`` (the least that restores ``target_health``, per position) or
      ``largest`` (the largest liquidation the venue accepts: the whole bucket in one request;
      ``keeper.domain.margin.profiles.with_policy``). The default here is ``least`` because a run
      manifest written before the field existed decodes with it and must replay as recorded; the
      daemon's configuration (``[keeper] sizing``) defaults to ``largest``;
    - ``first_chunk``: a burst (more than ``DECIDE_CHUNK`` candidates) is decided in chunks
      least headroom first, the first of ``first_chunk`` buckets, the others of
      ``DECIDE_CHUNK``; with caps, the chunks decide which buckets spend the cap first. The
      default here, 16, is what runs recorded before the field existed decided with; the
      daemon's configuration (``[keeper] first_chunk``) defaults to 8, the runner's first
      hand-off (``HANDOFF_FIRST``): the burst's first request leaves after 8 exact checks;
    - ``chain``: the chain venue whose contract events this core folds (``morpho-blue``: a
      ``keeper.domain.morpho.core.MorphoCore``); ``None``, the default, is the bucket core
      (``KeeperCore``) over the venue account events. ``keeper.domain.cores`` builds either.
    """

    profile: str
    mode: Mode = "paper"
    min_profit: Decimal = Decimal(0)
    cap_count: int | None = None
    cap_notional: Decimal | None = None
    cap_interval_us: int = 60_000_000
    intent_ttl_us: int = 60_000_000
    lookahead_s: int = 12
    chain: str | None = None
    reject_backoff_us: int = 1_000_000
    reject_backoff_max_us: int = 60_000_000
    sizing: SizingPolicy = "least"
    first_chunk: int = FIRST_CHUNK


class CoreSnapshot(msgspec.Struct, forbid_unknown_fields=True):
    """What ``KeeperCore.snapshot`` writes (msgpack): everything that decides its future output."""

    profile: str
    state: st.State
    episodes: dict[str, str]
    window: list[tuple[int, Decimal]]
    pending: list[ev.LiquidationIntended]
    settling: dict[str, tuple[str, int]] = msgspec.field(default_factory=dict)
    effects: dict[str, str] = msgspec.field(default_factory=dict)
    rejected: dict[str, tuple[int, int]] = msgspec.field(default_factory=dict)
    frame: list[str] = msgspec.field(default_factory=list)
