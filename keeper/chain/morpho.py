"""Morpho Blue on a chain: what the ingest reads at each block, and the ``liquidate`` call.

``MorphoVenue`` learns every market from the ``CreateMarket`` logs the ingest records (and
after a restart from the log's own copy), and which markets hold positions from the position
events. At each block the ingest asks it for ``readings``: for every market with positions
(or every watched market), the oracle's ``price()`` and the IRM's ``borrowRateView(marketParams,
market)``, both read at that block's hash (EIP-1898), in two batched round trips. An oracle that
reverts or answers 0 gives no price for that block, and the core decides nothing in that market
until a good price is read again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from keeper.chain.abi import Contract
from keeper.chain.artifacts import load
from keeper.chain.rpc import Rpc, RpcError
from keeper.domain import events as ev
from keeper.errors import PermanentError

__all__ = ["VENUE", "ZERO_ADDRESS", "MarketParams", "MorphoVenue", "abis"]

VENUE = "morpho-blue"
ZERO_ADDRESS = "0x" + "00" * 20
_POSITION_EVENTS = frozenset({"SupplyCollateral", "Borrow"})


class MarketParams(NamedTuple):
    """Morpho's ``MarketParams`` struct, in its field order."""

    loan_token: str
    collateral_token: str
    oracle: str
    irm: str
    lltv: int


def abis() -> tuple[Contract, Contract, Contract, Contract]:
    """(Morpho, oracle, IRM, ERC20) ABIs from the committed artifacts."""
    arts = load("morpho-blue")
    return (Contract(arts["Morpho"].abi), Contract(arts["OracleMock"].abi),
            Contract(arts["IrmMock"].abi), Contract(arts["ERC20Mock"].abi))


class MorphoVenue:
    """One Morpho deployment at ``address``; ``watch`` limits it to some market ids (None: all)."""

    def __init__(self, rpc: Rpc, address: str, watch: Iterable[str] | None = None) -> None:
        self.rpc = rpc
        self.address = address.lower()
        self.morpho, self.oracle_abi, self.irm_abi, self.erc20 = abis()
        self.watch = None if watch is None else {w.lower() for w in watch}
        self.params: dict[str, MarketParams] = {}
        self.active: set[str] = set()

    def on_log(self, e: ev.ChainLog) -> None:
        """Learn markets and which of them hold positions from the recorded logs."""
        mid = str(e.args.get("id", ""))
        if e.name == "CreateMarket":
            a = e.args
            self.params[mid] = MarketParams(str(a["loanToken"]), str(a["collateralToken"]),
                                            str(a["oracle"]), str(a["irm"]), int(a["lltv"]))
        elif e.name in _POSITION_EVENTS:
            self.active.add(mid)

    def log_filter(self) -> dict[str, Any]:
        return {"address": self.address}

    def decode(self, raw: Mapping[str, Any]) -> tuple[str, dict[str, int | str]] | None:
        if str(raw.get("address", "")).lower() != self.address:
            return None
        return self.morpho.decode_log(raw)

    def market_ids(self) -> list[str]:
        """The markets read at each block: watched ones that hold positions, sorted."""
        ids = self.active & set(self.params)
        if self.watch is not None:
            ids &= self.watch
        return sorted(ids)

    async def market_params(self, market_id: str) -> MarketParams:
        """A market's parameters (learned from its ``CreateMarket``, else read from the contract)."""
        got = self.params.get(market_id)
        if got is None:
            data = await self.rpc.call("eth_call", {"to": self.address, "data": self.morpho.call_data(
                "idToMarketParams", bytes.fromhex(market_id[2:]))}, "latest")
            raw = self.morpho.decode_return("idToMarketParams", data)
            got = MarketParams(str(raw[0]).lower(), str(raw[1]).lower(), str(raw[2]).lower(),
                               str(raw[3]).lower(), int(raw[4]))
            self.params[market_id] = got
        return got

    async def readings(self, block_hash: str) -> tuple[dict[str, int], dict[str, int]]:
        """Oracle prices and IRM rates of ``market_ids()`` at ``block_hash`` (the module docstring)."""
        market_ids = self.market_ids()
        if not market_ids:
            return {}, {}
        at = {"blockHash": block_hash}
        calls: list[tuple[str, Sequence[Any]]] = []
        for mid in market_ids:
            p = self.params[mid]
            calls.append(("eth_call", [{"to": p.oracle, "data": self.oracle_abi.call_data("price")}, at]))
            calls.append(("eth_call", [{"to": self.address, "data": self.morpho.call_data(
                "market", bytes.fromhex(mid[2:]))}, at]))
        replies = await self._tolerant_batch(calls)
        prices: dict[str, int] = {}
        rate_calls: list[tuple[str, Sequence[Any]]] = []
        rate_ids: list[str] = []
        for i, mid in enumerate(market_ids):
            price_raw, market_raw = replies[2 * i], replies[2 * i + 1]
            if isinstance(price_raw, str) and len(price_raw) > 2:
                price = int(self.oracle_abi.decode_return("price", price_raw)[0])
                if 0 < price < 1 << 256:
                    prices[mid] = price
            p = self.params[mid]
            if p.irm != ZERO_ADDRESS and isinstance(market_raw, str) and len(market_raw) > 2:
                m = self.morpho.decode_return("market", market_raw)
                rate_calls.append(("eth_call", [{"to": p.irm, "data": self.irm_abi.call_data(
                    "borrowRateView", tuple(p), tuple(int(x) for x in m))}, at]))
                rate_ids.append(mid)
        rates: dict[str, int] = {}
        for mid, raw in zip(rate_ids, await self._tolerant_batch(rate_calls), strict=True):
            if isinstance(raw, str) and len(raw) > 2:
                rates[mid] = int(self.irm_abi.decode_return("borrowRateView", raw)[0])
        return prices, rates

    async def _tolerant_batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """A batch in which one failing call (a reverting oracle) fails only its own reading."""
        try:
            return await self.rpc.batch(calls)
        except RpcError:
            out: list[Any] = []
            for method, params in calls:
                try:
                    out.append(await self.rpc.call(method, *params))
                except RpcError:
                    out.append(None)
            return out

    async def liquidation_call(self, decision: ev.Decision) -> tuple[str, str]:
        """The loan token to approve and ``liquidate``'s calldata: by repaid shares where the
        decision gives them, else by seized assets."""
        if decision.market is None or decision.seize_amount is None:
            raise PermanentError("not a Morpho liquidation (no market or seize amount)")
        params = await self.market_params(decision.market)
        shares = int(decision.repay_shares or 0)
        seized = 0 if shares else int(decision.seize_amount)
        return params.loan_token, self.liquidate_data(params, decision.account, seized, shares)

    def outcome(self, logs: Sequence[Mapping[str, Any]]) -> tuple[int, int] | None:
        """``(repaidAssets, seizedAssets)`` of the receipt's ``Liquidate`` event."""
        topic = self.morpho.topics["Liquidate"]
        for raw in logs:
            if str(raw.get("address", "")).lower() == self.address and raw["topics"][0].lower() == topic:
                decoded = self.morpho.decode_log(raw)
                assert decoded is not None
                return int(decoded[1]["repaidAssets"]), int(decoded[1]["seizedAssets"])
        return None

    def liquidate_data(self, params: MarketParams, borrower: str, seized_assets: int,
                       repaid_shares: int) -> str:
        """Calldata of ``liquidate(marketParams, borrower, seizedAssets, repaidShares, "")``."""
        return self.morpho.call_data("liquidate", tuple(params), borrower, seized_assets, repaid_shares, b"")
