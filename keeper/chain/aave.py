"""Aave v3.0.2 on a chain: which logs are the pool's, what the ingest reads at each block, and the
``liquidationCall``.

``AaveVenue`` starts from the ``PoolAddressesProvider`` (``[venue] address``): ``resolve`` reads the
pool, the configurator and the price oracle from it. The pool's and the configurator's logs are
the venue's, and so are the logs of every token a ``ReserveInitialized`` names (aTokens,
variable and stable debt tokens), learned as the logs are recorded (and again from the log after
a restart). A token's ``Initialized`` log, which comes before its ``ReserveInitialized`` in the
same transaction, is the venue's when its indexed ``pool`` is this pool: it carries the decimals.
The ingest therefore reads every log of a block (no address filter) and keeps these.

At each block the frame holds every reserve's ``getAssetPrice`` (base currency, 8 decimals) read
at that block's hash, in one batched round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from keeper.chain.abi import Contract
from keeper.chain.artifacts import load
from keeper.chain.rpc import Rpc, RpcError
from keeper.domain import events as ev
from keeper.errors import PermanentError

__all__ = ["MAX_UINT256", "VENUE", "AaveVenue", "abis"]

VENUE = "aave-v3.0"
MAX_UINT256 = (1 << 256) - 1
_TOKEN_ABI = {"a": "AToken", "v": "VariableDebtToken", "s": "StableDebtToken"}


def abis() -> dict[str, Contract]:
    """The ABIs the venue reads and calls, from the committed artifacts."""
    arts = load("aave-v3")
    names = ("PoolAddressesProvider", "Pool", "PoolConfigurator", "AToken", "VariableDebtToken",
             "StableDebtToken", "PriceOracle", "MintableERC20")
    return {n: Contract(arts[n].abi) for n in names}


class AaveVenue:
    """One Aave pool, found from its addresses provider (module docstring)."""

    def __init__(self, rpc: Rpc, provider: str) -> None:
        self.rpc = rpc
        self.provider = provider.lower()
        self.abis = abis()
        self.erc20 = self.abis["MintableERC20"]
        self.pool = self.configurator = self.oracle = ""
        self.tokens: dict[str, str] = {}
        """token address -> ``a`` | ``v`` | ``s``."""
        self.reserves: list[str] = []
        self._init_topics = {self.abis["AToken"].topics["Initialized"],
                             self.abis["VariableDebtToken"].topics["Initialized"]}

    @property
    def address(self) -> str:
        """The contract the executor calls: the pool."""
        return self.pool

    async def resolve(self) -> None:
        """Read the pool, the configurator and the oracle from the addresses provider."""
        p = self.abis["PoolAddressesProvider"]
        calls = [("eth_call", [{"to": self.provider, "data": p.call_data(fn)}, "latest"])
                 for fn in ("getPool", "getPoolConfigurator", "getPriceOracle")]
        pool, configurator, oracle = await self.rpc.batch(calls)
        self.pool = str(p.decode_return("getPool", pool)[0]).lower()
        self.configurator = str(p.decode_return("getPoolConfigurator", configurator)[0]).lower()
        self.oracle = str(p.decode_return("getPriceOracle", oracle)[0]).lower()

    # ------------------------------------------------------------------ LogSource

    def log_filter(self) -> dict[str, Any]:
        return {}

    def decode(self, raw: Mapping[str, Any]) -> tuple[str, dict[str, int | str]] | None:
        address = str(raw.get("address", "")).lower()
        topics = [str(t).lower() for t in raw.get("topics", [])]
        if address == self.pool:
            return self.abis["Pool"].decode_log(raw)
        if address == self.configurator:
            return self.abis["PoolConfigurator"].decode_log(raw)
        kind = self.tokens.get(address)
        if kind is not None:
            return self.abis[_TOKEN_ABI[kind]].decode_log(raw)
        ours = len(topics) > 2 and topics[2][-40:] == self.pool[2:]
        if ours and topics[0] in self._init_topics:
            abi = "AToken" if topics[0] == self.abis["AToken"].topics["Initialized"] else "VariableDebtToken"
            return self.abis[abi].decode_log(raw)
        return None

    def on_log(self, e: ev.ChainLog) -> None:
        if e.name == "ReserveInitialized":
            a = e.args
            self.tokens[str(a["aToken"])] = "a"
            self.tokens[str(a["variableDebtToken"])] = "v"
            self.tokens[str(a["stableDebtToken"])] = "s"
            if str(a["asset"]) not in self.reserves:
                self.reserves.append(str(a["asset"]))

    async def readings(self, block_hash: str) -> tuple[dict[str, int], dict[str, int]]:
        """Every reserve's oracle price at ``block_hash`` (no rates: the reserves carry theirs)."""
        if not self.reserves:
            return {}, {}
        o = self.abis["PriceOracle"]
        at = {"blockHash": block_hash}
        calls = [("eth_call", [{"to": self.oracle, "data": o.call_data("getAssetPrice", r)}, at])
                 for r in self.reserves]
        try:
            replies = await self.rpc.batch(calls)
        except RpcError:
            replies = [None] * len(calls)
        prices: dict[str, int] = {}
        for asset, raw in zip(self.reserves, replies, strict=True):
            if isinstance(raw, str) and len(raw) > 2:
                price = int(o.decode_return("getAssetPrice", raw)[0])
                if 0 < price < 1 << 256:
                    prices[asset] = price
        return prices, {}

    # ------------------------------------------------------------------ LiquidationVenue

    async def liquidation_call(self, decision: ev.Decision) -> tuple[str, str]:
        """The debt asset to approve and ``liquidationCall(collateral, debt, user, 2**256 - 1,
        false)``'s calldata: the most the close factor allows at execution, which is what the
        keeper planned (resubmitting the planned amount instead can take the contract down
        another path: when all the collateral is taken, the debt it buys, given back as
        ``debtToCover``, no longer exhausts the collateral by a few units)."""
        if decision.repay_asset is None or decision.seize_asset is None:
            raise PermanentError("not an Aave liquidation (no repay or seize asset)")
        data = self.abis["Pool"].call_data("liquidationCall", decision.seize_asset, decision.repay_asset,
                                           decision.account, MAX_UINT256, False)
        return decision.repay_asset, data

    def outcome(self, logs: Sequence[Mapping[str, Any]]) -> tuple[int, int] | None:
        """``(debtToCover, liquidatedCollateralAmount)`` of the receipt's ``LiquidationCall``."""
        pool = self.abis["Pool"]
        topic = pool.topics["LiquidationCall"]
        for raw in logs:
            if str(raw.get("address", "")).lower() == self.pool and raw["topics"][0].lower() == topic:
                decoded = pool.decode_log(raw)
                assert decoded is not None
                return int(decoded[1]["debtToCover"]), int(decoded[1]["liquidatedCollateralAmount"])
        return None
