"""A Morpho Blue deployment on a local node, from the committed artifacts: tests, bench, demo.

Everything goes through the contracts' own transactions (``eth_sendTransaction`` from anvil's
unlocked or impersonated accounts): the protocol's bytecode keeps the books, this module only
sends. ``batch()`` turns automine off, sends many transactions in JSON-RPC batches and mines
them in one block at a pinned timestamp (in the order sent per sender), which makes books of
thousands of positions quick to build.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from keeper.chain.abi import Contract
from keeper.chain.artifacts import load
from keeper.chain.morpho import ZERO_ADDRESS, MarketParams
from keeper.chain.rpc import Rpc
from keeper.errors import KeeperError

WAD = 10**18
OWNER = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
"""anvil's first unlocked account (the deployer and Morpho's owner)."""
GAS = 3_000_000


class TxFailed(KeeperError):
    """A set-up transaction reverted."""


def market_id(p: MarketParams) -> str:
    """Morpho's ``MarketParamsLib.id``: keccak256 of the ABI-encoded struct."""
    return "0x" + keccak(abi_encode(["address", "address", "address", "address", "uint256"], list(p))).hex()


@dataclass
class LocalMorpho:
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

    async def receipt(self, tx: str) -> dict[str, Any]:
        for _ in range(500):
            r = await self.rpc.call("eth_getTransactionReceipt", tx)
            if r is not None:
                if int(r["status"], 16) != 1:
                    raise TxFailed(f"transaction {tx} reverted")
                return dict(r)
            await _sleep(0.01)
        raise TxFailed(f"no receipt for {tx}")

    async def send(self, sender: str, to: str, abi: str, fn: str, *args: Any, check: bool = True) -> str:
        """Call ``fn`` on ``to`` from ``sender`` (unlocked or impersonated); in a ``batch`` the
        transaction is queued and its hash is returned unchecked."""
        tx = {"from": sender, "to": to, "data": self.abis[abi].call_data(fn, *args), "gas": hex(GAS)}
        if self._batching is not None:
            self._batching.append(("eth_sendTransaction", [tx]))
            return ""
        h = str(await self.rpc.call("eth_sendTransaction", tx))
        if check:
            await self.receipt(h)
        return h

    @contextlib.asynccontextmanager
    async def batch(self, timestamp: int | None = None, chunk: int = 500) -> AsyncIterator[list[str]]:
        """Queue the ``send`` calls of the block, then mine them in one block (at ``timestamp``);
        yields the list that receives the transaction hashes."""
        self._batching = []
        hashes: list[str] = []
        try:
            yield hashes
        finally:
            queued, self._batching = self._batching, None
        await self.rpc.call("evm_setAutomine", False)
        try:
            # the node handles a JSON-RPC batch concurrently: nonces are given here, in the order
            # queued, so each sender's transactions are mined in that order
            senders = sorted({q[1][0]["from"] for q in queued})
            counts = await self.rpc.batch([("eth_getTransactionCount", [a, "pending"]) for a in senders])
            nonce = {a: int(c, 16) for a, c in zip(senders, counts, strict=True)}
            for _, (tx,) in queued:
                tx["nonce"] = hex(nonce[tx["from"]])
                nonce[tx["from"]] += 1
            for i in range(0, len(queued), chunk):
                hashes.extend(str(h) for h in await self.rpc.batch(queued[i:i + chunk]))
            if timestamp is not None:
                await self.rpc.call("evm_setNextBlockTimestamp", hex(timestamp))
            await self.rpc.call("evm_mine")
        finally:
            await self.rpc.call("evm_setAutomine", True)

    async def receipts(self, hashes: Sequence[str], chunk: int = 500) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(0, len(hashes), chunk):
            part = hashes[i:i + chunk]
            out.extend(await self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in part]))
        return out

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

    async def impersonate(self, who: Sequence[str]) -> None:
        await self.rpc.batch([("anvil_impersonateAccount", [w]) for w in who])
        await self.rpc.batch([("anvil_setBalance", [w, hex(10**24)]) for w in who])

    async def view(self, abi: str, to: str, fn: str, *args: Any) -> tuple[Any, ...]:
        call = {"to": to, "data": self.abis[abi].call_data(fn, *args)}
        data = await self.rpc.call("eth_call", call, "latest")
        return self.abis[abi].decode_return(fn, data)

    async def block_time(self) -> int:
        return int((await self.rpc.call("eth_getBlockByNumber", "latest", False))["timestamp"], 16)


async def _sleep(s: float) -> None:
    await asyncio.sleep(s)
