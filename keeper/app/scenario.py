"""The `keeper health` scenario reader (format: ../shared/vectors/SCENARIO.md).

``load_scenario(text)`` returns a fully validated :class:`Scenario` or raises
:class:`~keeper.errors.ScenarioError` whose message names the offending field by its dotted
path (``account.isolated[0].positions[1].market``). JSON is parsed with a ``parse_float`` hook
so that a JSON number where a decimal string is required is reported, never silently rounded.
Unknown top-level keys are ignored (they are for people and checkers); unknown keys inside
markets, assets, buckets and positions are errors (a typo there changes the answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from keeper.domain.margin import (
    Extras,
    LiquidationRequest,
    OptionSpec,
    PerpWeights,
    Pricing,
    Profile,
    UnknownProfile,
    get_profile,
)
from keeper.domain.model import CROSS, AssetParams, Bucket, MarketParams, Position, Tier
from keeper.errors import ScenarioError
from keeper.jsonlimits import MAX_DOCUMENT_BYTES, problem

__all__ = ["Scenario", "load_scenario"]


class _JsonFloat(str):
    """A JSON float's text, kept so the error can quote it."""

    __slots__ = ()


@dataclass(frozen=True)
class Scenario:
    """A validated scenario: the profile, parameters, prices and the buckets in file order
    (the cross bucket first, named ``cross``; isolated buckets by their ``id``)."""

    id: str
    profile: Profile
    markets: dict[str, MarketParams]
    assets: dict[str, AssetParams]
    prices: dict[str, Decimal]
    cross: Bucket | None
    isolated: list[Bucket] = field(default_factory=list)
    request: LiquidationRequest | None = None
    extras: Extras = field(default_factory=Extras)
    """What MarginFi, Vertex and Aevo read beyond the parameters (docs/margin.md)."""

    @property
    def pricing(self) -> Pricing:
        """The margin engine's context for every bucket of the scenario."""
        return Pricing(self.profile, self.markets, self.assets, self.prices, self.extras)


def _obj(v: Any, path: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ScenarioError(f"{path}: expected an object, got {_kind(v)}")
    return v


def _kind(v: Any) -> str:
    if isinstance(v, _JsonFloat):
        return f"a JSON float ({v})"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return f"a JSON number ({v})"
    if v is None:
        return "null"
    names = {"dict": "an object", "list": "an array", "str": "a string"}
    return names.get(type(v).__name__, type(v).__name__)


def _dec(v: Any, path: str, *, positive: bool = False, nonneg: bool = False) -> Decimal:
    if isinstance(v, _JsonFloat):
        raise ScenarioError(f"{path}: a JSON float ({v}) where a decimal string is required")
    if not isinstance(v, str) or type(v) is not str:
        raise ScenarioError(f"{path}: expected a decimal string, got {_kind(v)}")
    try:
        d = Decimal(v.strip())
    except InvalidOperation:
        raise ScenarioError(f"{path}: {v!r} is not a decimal number") from None
    if not d.is_finite():
        raise ScenarioError(f"{path}: {v!r} is not a finite number")
    if positive and d <= 0:
        raise ScenarioError(f"{path}: must be > 0, got {v}")
    if nonneg and d < 0:
        raise ScenarioError(f"{path}: must be >= 0, got {v}")
    return d


def _opt_dec(o: dict[str, Any], key: str, path: str, **kw: bool) -> Decimal | None:
    return None if o.get(key) is None else _dec(o[key], f"{path}.{key}", **kw)


def _check_keys(o: dict[str, Any], allowed: set[str], path: str) -> None:
    extra = sorted(set(o) - allowed)
    if extra:
        raise ScenarioError(f"{path}.{extra[0]}: unknown field")


# Fields some profiles read beyond the shared format (docs/margin.md, "Scenario extensions"),
# with the models that read them; any other profile refuses them, naming the field.
_MARKET_EXTRAS: dict[str, tuple[str, ...]] = {
    "conf": ("marginfi",), "long_weight": ("vertex",), "short_weight": ("vertex",),
    "long_weight_init": ("vertex",), "short_weight_init": ("vertex",), "spread_asset": ("vertex",),
    "option": ("aevo",),
}
_ASSET_EXTRAS: dict[str, tuple[str, ...]] = {
    "conf": ("marginfi",), "asset_weight_init": ("marginfi", "vertex"),
    "liability_weight_init": ("marginfi", "vertex"),
}


@dataclass
class _ExtrasDraft:
    """``Extras`` while the scenario is read (frozen by ``done``)."""

    conf: dict[str, Decimal] = field(default_factory=dict)
    initial: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    perp_weights: dict[str, PerpWeights] = field(default_factory=dict)
    spreads: dict[str, tuple[str, str]] = field(default_factory=dict)  # perp -> (spot, path)
    options: dict[str, tuple[OptionSpec, str]] = field(default_factory=dict)  # market -> (spec, path)

    def done(self, prices: dict[str, Decimal], assets: dict[str, AssetParams]) -> Extras:
        paired: dict[str, str] = {}
        for perp, (spot, where) in sorted(self.spreads.items()):
            if spot not in assets:
                raise ScenarioError(f"{where}: unknown asset {spot!r} (not in assets)")
            if spot in paired:
                raise ScenarioError(f"{where}: {spot!r} is already paired with {paired[spot]!r}")
            paired[spot] = perp
        for spec, where in self.options.values():
            if spec.underlying not in prices:
                raise ScenarioError(f"{where}.underlying: no price for {spec.underlying!r} "
                                    f"(not in markets or assets)")
        return Extras(conf=self.conf, initial=self.initial, perp_weights=self.perp_weights,
                      spreads={k: v[0] for k, v in self.spreads.items()},
                      options={k: v[0] for k, v in self.options.items()})


def _allowed(o: dict[str, Any], table: dict[str, tuple[str, ...]], profile: Profile, path: str) -> None:
    for key, models in table.items():
        if key in o and profile.model not in models:
            raise ScenarioError(f"{path}.{key}: profile {profile.name!r} does not read it "
                                f"(a field of the {', '.join(models)} model)")


def _conf(sym: str, o: dict[str, Any], path: str, draft: _ExtrasDraft) -> None:
    conf = _opt_dec(o, "conf", path, nonneg=True)
    if conf is None:
        return
    if sym in draft.conf and draft.conf[sym] != conf:
        raise ScenarioError(f"{path}.conf: {sym!r} is also a market with another conf")
    draft.conf[sym] = conf


def _option(raw: Any, path: str) -> OptionSpec:
    o = _obj(raw, path)
    _check_keys(o, {"type", "underlying"}, path)
    kind = o.get("type")
    if kind not in {"call", "put"}:
        raise ScenarioError(f"{path}.type: expected 'call' or 'put', got {_kind(kind)}")
    under = o.get("underlying")
    if not isinstance(under, str) or not under:
        raise ScenarioError(f"{path}.underlying: expected a symbol, got {_kind(under)}")
    return OptionSpec(kind="call" if kind == "call" else "put", underlying=under)


def _market_extras(sym: str, o: dict[str, Any], path: str, profile: Profile, draft: _ExtrasDraft) -> bool:
    """Reads the market's venue fields into ``draft``; whether they give its margin (an option,
    or both of Vertex's maintenance weights), so that no ``mmf`` is needed."""
    _allowed(o, _MARKET_EXTRAS, profile, path)
    _conf(sym, o, path, draft)
    w = {k: _opt_dec(o, k, path, nonneg=True)
         for k in ("long_weight", "short_weight", "long_weight_init", "short_weight_init")}
    if any(v is not None for v in w.values()):
        draft.perp_weights[sym] = PerpWeights(long=w["long_weight"], short=w["short_weight"],
                                              long_init=w["long_weight_init"],
                                              short_init=w["short_weight_init"])
    spot = o.get("spread_asset")
    if spot is not None:
        if not isinstance(spot, str) or not spot:
            raise ScenarioError(f"{path}.spread_asset: expected an asset name, got {_kind(spot)}")
        draft.spreads[sym] = (spot, f"{path}.spread_asset")
    if o.get("option") is not None:
        draft.options[sym] = (_option(o["option"], f"{path}.option"), f"{path}.option")
        return True
    return w["long_weight"] is not None and w["short_weight"] is not None


_MARKET_KEYS = {"price", "mmf", "imf", "mmf_tiers", "max_leverage", "liquidation_fee", *_MARKET_EXTRAS}


def _market(
    sym: str, raw: Any, path: str, profile: Profile, draft: _ExtrasDraft
) -> tuple[MarketParams, Decimal]:
    o = _obj(raw, path)
    _check_keys(o, _MARKET_KEYS, path)
    if "price" not in o:
        raise ScenarioError(f"{path}.price: missing price")
    price = _dec(o["price"], f"{path}.price", positive=True)
    tiers: list[Tier] = []
    raw_tiers = o.get("mmf_tiers") or []
    if not isinstance(raw_tiers, list):
        raise ScenarioError(f"{path}.mmf_tiers: expected an array, got {_kind(raw_tiers)}")
    for i, t in enumerate(raw_tiers):
        tp = f"{path}.mmf_tiers[{i}]"
        to = _obj(t, tp)
        _check_keys(to, {"notional_floor", "rate", "deduction"}, tp)
        for k in ("notional_floor", "rate"):
            if k not in to:
                raise ScenarioError(f"{tp}.{k}: missing")
        tiers.append(
            Tier(
                _dec(to["notional_floor"], f"{tp}.notional_floor", nonneg=True),
                _dec(to["rate"], f"{tp}.rate", nonneg=True),
                _opt_dec(to, "deduction", tp),
            )
        )
    m = MarketParams(
        symbol=sym,
        mmf=_opt_dec(o, "mmf", path, nonneg=True),
        imf=_opt_dec(o, "imf", path, nonneg=True),
        mmf_tiers=tuple(tiers),
        max_leverage=_opt_dec(o, "max_leverage", path, positive=True),
        liquidation_fee=_opt_dec(o, "liquidation_fee", path, nonneg=True),
    )
    margin_given = _market_extras(sym, o, path, profile, draft)
    if m.mmf is None and not m.mmf_tiers and m.max_leverage is None and not margin_given:
        raise ScenarioError(f"{path}: needs one of mmf, mmf_tiers or max_leverage")
    return m, price


_ASSET_DECIMALS = ("liquidation_threshold", "liquidation_bonus", "liquidation_protocol_fee",
                   "asset_weight", "liability_weight")


def _asset(
    sym: str, raw: Any, path: str, profile: Profile, draft: _ExtrasDraft
) -> tuple[AssetParams, Decimal]:
    o = _obj(raw, path)
    _check_keys(o, {"price", "decimals", *_ASSET_DECIMALS, *_ASSET_EXTRAS}, path)
    _allowed(o, _ASSET_EXTRAS, profile, path)
    _conf(sym, o, path, draft)
    aw, lw = (_opt_dec(o, k, path, nonneg=True) for k in ("asset_weight_init", "liability_weight_init"))
    if (aw is None) != (lw is None):
        missing = "liability_weight_init" if lw is None else "asset_weight_init"
        raise ScenarioError(f"{path}.{missing}: missing (give both initial weights or neither)")
    if aw is not None and lw is not None:
        draft.initial[sym] = (aw, lw)
    if "price" not in o:
        raise ScenarioError(f"{path}.price: missing price")
    price = _dec(o["price"], f"{path}.price", positive=True)
    dec = o.get("decimals")
    if dec is not None and (isinstance(dec, bool) or not isinstance(dec, int) or not 0 <= dec <= 36):
        raise ScenarioError(f"{path}.decimals: expected an integer 0..36, got {_kind(dec)}")
    vals = {k: _opt_dec(o, k, path, nonneg=True) for k in _ASSET_DECIMALS}
    return AssetParams(symbol=sym, decimals=dec, **vals), price


def _bucket(
    name: str,
    raw: dict[str, Any],
    path: str,
    markets: dict[str, MarketParams],
    assets: dict[str, AssetParams],
) -> Bucket:
    bal_raw = raw.get("balances") or {}
    balances: dict[str, Decimal] = {}
    for sym, v in _obj(bal_raw, f"{path}.balances").items():
        if sym not in assets:
            raise ScenarioError(f"{path}.balances.{sym}: unknown asset {sym!r} (not in assets)")
        d = _dec(v, f"{path}.balances.{sym}")
        if d != 0:
            balances[sym] = d
    positions: dict[str, Position] = {}
    pos_raw = raw.get("positions") or []
    if not isinstance(pos_raw, list):
        raise ScenarioError(f"{path}.positions: expected an array, got {_kind(pos_raw)}")
    for i, p in enumerate(pos_raw):
        pp = f"{path}.positions[{i}]"
        po = _obj(p, pp)
        _check_keys(po, {"market", "size", "entry_price", "quote"}, pp)
        sym_raw = po.get("market")
        if not isinstance(sym_raw, str):
            raise ScenarioError(f"{pp}.market: expected a market name, got {_kind(sym_raw)}")
        sym = sym_raw
        if not isinstance(sym, str):
            raise ScenarioError(f"{pp}.market: expected a market name, got {_kind(sym)}")
        if sym not in markets:
            raise ScenarioError(f"{pp}.market: unknown market {sym!r} (not in markets)")
        if sym in positions:
            raise ScenarioError(f"{pp}.market: a second position in {sym!r} in the same bucket")
        if "size" not in po:
            raise ScenarioError(f"{pp}.size: missing")
        entry = _opt_dec(po, "entry_price", pp, positive=True)
        quote = _opt_dec(po, "quote", pp)
        if entry is not None and quote is not None:
            raise ScenarioError(f"{pp}: give entry_price or quote, not both")
        positions[sym] = Position(sym, _dec(po["size"], f"{pp}.size"), entry_price=entry, quote=quote)
    return Bucket(name, balances, positions)


def load_scenario(text: str | bytes) -> Scenario:
    """Parse and validate a scenario; :class:`ScenarioError` names the first bad field, or the
    limit (``keeper.jsonlimits``: size, nesting depth) a document beyond it exceeds."""
    why = problem(text, max_bytes=MAX_DOCUMENT_BYTES)
    if why is not None:  # the parser recurses per level: refuse deep nesting before it does
        raise ScenarioError(f"scenario: {why}")
    try:
        doc = json.loads(text, parse_float=_JsonFloat, parse_constant=_bad_constant)
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"bad JSON: {exc}") from None
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None
    top = _obj(doc, "scenario")
    pname = top.get("profile")
    if not isinstance(pname, str):
        raise ScenarioError(f"profile: expected a profile name, got {_kind(pname)}")
    try:
        profile = get_profile(pname)
    except UnknownProfile as exc:
        raise ScenarioError(f"profile: {exc}") from None
    markets: dict[str, MarketParams] = {}
    assets: dict[str, AssetParams] = {}
    prices: dict[str, Decimal] = {}
    draft = _ExtrasDraft()
    for sym, raw in _obj(top.get("markets") or {}, "markets").items():
        markets[sym], prices[sym] = _market(sym, raw, f"markets.{sym}", profile, draft)
    for sym, raw in _obj(top.get("assets") or {}, "assets").items():
        assets[sym], price = _asset(sym, raw, f"assets.{sym}", profile, draft)
        if sym in prices and prices[sym] != price:
            raise ScenarioError(f"assets.{sym}.price: {sym!r} is also a market with another price")
        prices[sym] = price
    extras = draft.done(prices, assets)
    account = _obj(top.get("account"), "account")
    _check_keys(account, {"cross", "isolated"}, "account")
    cross = None
    if account.get("cross") is not None:
        c = _obj(account["cross"], "account.cross")
        _check_keys(c, {"balances", "positions"}, "account.cross")
        cross = _bucket(CROSS, c, "account.cross", markets, assets)
    isolated: list[Bucket] = []
    iso_raw = account.get("isolated") or []
    if not isinstance(iso_raw, list):
        raise ScenarioError(f"account.isolated: expected an array, got {_kind(iso_raw)}")
    seen: set[str] = set()
    for i, b in enumerate(iso_raw):
        bp = f"account.isolated[{i}]"
        bo = _obj(b, bp)
        _check_keys(bo, {"id", "balances", "positions"}, bp)
        bid = bo.get("id")
        if not isinstance(bid, str) or not bid or bid == CROSS or bid in seen:
            raise ScenarioError(f"{bp}.id: expected a unique bucket name other than 'cross', got {bid!r}")
        seen.add(bid)
        isolated.append(_bucket(bid, bo, bp, markets, assets))
    if profile.kind == "lending":
        for b in ([cross] if cross is not None else []) + isolated:
            if b.positions:
                where = "account.cross" if b.name == CROSS else f"account.isolated[{isolated.index(b)}]"
                raise ScenarioError(
                    f"{where}.positions: profile {profile.name!r} is a lending profile and takes no positions"
                )
    request = None
    if top.get("liquidation_request") is not None:
        rp = "liquidation_request"
        if profile.kind != "lending":  # a request repays a debt: a perp liquidation closes positions
            raise ScenarioError(f"{rp}: profile {profile.name!r} closes positions and repays no debt; "
                                "a repay/seize request applies to the lending profiles only")
        request = _request(_obj(top[rp], rp), rp, assets, profile)
    sid = top.get("id")
    return Scenario(
        id=sid if isinstance(sid, str) else "",
        profile=profile,
        markets=markets,
        assets=assets,
        prices=prices,
        cross=cross,
        isolated=isolated,
        request=request,
        extras=extras,
    )


def _request(
    ro: dict[str, Any], rp: str, assets: dict[str, AssetParams], profile: Profile
) -> LiquidationRequest:
    _check_keys(ro, {"repay_asset", "seize_asset", "amount", "seize_amount"}, rp)
    for k in ("repay_asset", "seize_asset"):
        if not isinstance(ro.get(k), str) or ro[k] not in assets:
            raise ScenarioError(f"{rp}.{k}: expected an asset of the scenario, got {ro.get(k)!r}")
    if "seize_amount" not in ro:
        return LiquidationRequest(
            ro["repay_asset"], ro["seize_asset"], _dec(ro.get("amount"), f"{rp}.amount", positive=True)
        )
    if profile.model != "marginfi":
        raise ScenarioError(f"{rp}.seize_amount: profile {profile.name!r} does not read it "
                            f"(a field of the marginfi model)")
    if "amount" in ro:
        raise ScenarioError(f"{rp}.seize_amount: give amount or seize_amount, not both")
    amount = _dec(ro["seize_amount"], f"{rp}.seize_amount", positive=True)
    return LiquidationRequest(ro["repay_asset"], ro["seize_asset"], amount, by="seize")


def _bad_constant(name: str) -> Any:
    raise ValueError(f"bad JSON: {name} is not a number")
