"""A Morpho Blue deployment on a local node, from the committed artifacts: tests, bench, demo.

Everything goes through the contracts' own transactions (``eth_sendTransaction`` from anvil's
unlocked or impersonated accounts): the protocol's bytecode keeps the books, this module only
sends. ``batch()`` (``localnet.LocalNet``'s, shared with the Aave deployment) turns automine off,
sends many transactions in JSON-RPC batches and mines them in one block at a pinned timestamp (in
the order sent per sender), which makes books of thousands of positions quick to build.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from keeper.chain.abi import Contract
from keeper.chain.artifacts import load
from keeper.chain.localnet import GAS, OWNER, LocalNet, TxFailed
from keeper.chain.morpho import ZERO_ADDRESS, MarketParams
from keeper.chain.rpc import Rpc

__all__ = ["GAS", "OWNER", "WAD", "LocalMorpho", "TxFailed", "market_id"]

WAD = 10**18


def market_id(p: MarketParams) -> str:
    """Morpho's ``MarketParamsLib.id``: keccak256 of the ABI-encoded struct."""
    return "0x" + keccak(abi_encode(["address", "address", "address", "address", "uint256"], list(p))).hex()


@dataclass
class LocalMorpho(LocalNet):
    """Morpho, an IRM and tokens on a node at ``rpc``; ``markets`` by id."""

    rpc: Rpc
    morpho: str = ""
    irm: str = ""
    markets: dict[str, MarketParams] = field(default_factory=dict)
    abis: dict[str, Contract] = field(default_factory=dict)
    _batching: list[tuple[str, list[Any]]] | None = None

    @classmethod
    async def deploy(cls, rpc: Rpc, lltvs: Sequence[int] = ()) -> LocalMorpho:
        arts = load("morpho-blue")
        net = cls(rpc, abis={name: Contract(a.abi) for name, a in arts.items()})
        await rpc.call("anvil_setBalance", OWNER, hex(10**30))
        owner_arg = abi_encode(["address"], [OWNER]).hex()
        net.morpho = await net.create("Morpho", owner_arg)
        net.irm = await net.create("IrmMock")
        await net.send(OWNER, net.morpho, "Morpho", "enableIrm", net.irm)
        await net.send(OWNER, net.morpho, "Morpho", "enableIrm", ZERO_ADDRESS)
        for lltv in lltvs:
            await net.send(OWNER, net.morpho, "Morpho", "enableLltv", lltv)
        return net

    async def create(self, name: str, ctor_hex: str = "") -> str:
        """Deploy a committed artifact; returns its address."""
        code = load("morpho-blue")[name].bytecode.hex() + ctor_hex
        tx = await self.rpc.call("eth_sendTransaction",
                                 {"from": OWNER, "data": "0x" + code, "gas": hex(GAS * 5)})
        receipt = await self.receipt(tx)
        return str(receipt["contractAddress"]).lower()

    async def token(self) -> str:
        return await self.create("ERC20Mock")

    async def create_market(self, loan: str, collateral: str, lltv: int, price: int, irm: bool = True) -> str:
        """A market with its own oracle at ``price`` (1e36 scale); returns the market id."""
        oracle = await self.create("OracleMock")
        await self.send(OWNER, oracle, "OracleMock", "setPrice", price)
        p = MarketParams(loan, collateral, oracle, self.irm if irm else ZERO_ADDRESS, lltv)
        await self.send(OWNER, self.morpho, "Morpho", "createMarket", tuple(p))
        mid = market_id(p)
        self.markets[mid] = p
        return mid

    async def set_price(self, mid: str, price: int) -> str:
        return await self.send(OWNER, self.markets[mid].oracle, "OracleMock", "setPrice", price)

    async def fund(self, token: str, who: str, amount: int) -> None:
        await self.send(OWNER, token, "ERC20Mock", "setBalance", who, amount)

    async def supply(self, mid: str, amount: int, supplier: str = OWNER) -> None:
        p = self.markets[mid]
        await self.fund(p.loan_token, supplier, amount)
        await self.send(supplier, p.loan_token, "ERC20Mock", "approve", self.morpho, (1 << 256) - 1)
        await self.send(supplier, self.morpho, "Morpho", "supply", tuple(p), amount, 0, supplier, b"")

    async def approve_collateral(self, mid: str) -> None:
        """Let the owner supply collateral on behalf of borrowers."""
        p = self.markets[mid]
        await self.send(OWNER, p.collateral_token, "ERC20Mock", "approve", self.morpho, (1 << 256) - 1)

    async def collateral(self, mid: str, borrower: str, amount: int) -> None:
        """Supply ``amount`` of collateral on behalf of ``borrower`` from the owner's balance
        (``fund`` the owner and ``approve_collateral`` first)."""
        p = self.markets[mid]
        await self.send(OWNER, self.morpho, "Morpho", "supplyCollateral", tuple(p), amount, borrower, b"")

    async def borrow(self, mid: str, borrower: str, assets: int) -> None:
        p = self.markets[mid]
        await self.send(borrower, self.morpho, "Morpho", "borrow", tuple(p), assets, 0, borrower, borrower)
