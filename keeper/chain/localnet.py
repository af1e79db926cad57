"""What the local deployments (``testnet.LocalMorpho``, ``aave_testnet.LocalAave``) share: sending
transactions from anvil's unlocked or impersonated accounts, batching them into one block, reading.

Everything goes through the contracts' own transactions (``eth_sendTransaction``): the protocols'
bytecode keeps the books, this module only sends. ``batch()`` turns automine off, sends many
transactions in JSON-RPC batches with explicit nonces and mines them (in the order sent per
sender) in one block at a pinned timestamp, or in as many blocks as the node's block gas limit
needs. ``create_address`` predicts a ``CREATE``'s address, so that a batch may use a contract it
deploys.

``LocalNet`` is a mixin: a subclass (a dataclass) declares the fields ``rpc``, ``abis`` and
``_batching`` (default ``None``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from eth_utils.crypto import keccak

from keeper.chain.abi import Contract
from keeper.chain.rpc import Rpc
from keeper.errors import KeeperError

__all__ = ["GAS", "OWNER", "LocalNet", "TxFailed", "create_address", "create_gas"]

OWNER = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
"""anvil's first unlocked account (the deployer and the protocols' owner)."""
GAS = 3_000_000
"""The gas limit of a call (set-up transactions are sent with a fixed limit, not estimated)."""


class TxFailed(KeeperError):
    """A set-up transaction reverted."""


def create_address(sender: str, nonce: int) -> str:
    """The address of the contract ``sender`` creates with ``CREATE`` at ``nonce``:
    keccak256(rlp([sender, nonce]))[12:], lowercase ``0x`` hex."""
    addr = bytes.fromhex(sender.removeprefix("0x"))
    if nonce == 0:
        n = b"\x80"
    elif nonce < 0x80:
        n = bytes([nonce])
    else:
        raw = nonce.to_bytes((nonce.bit_length() + 7) // 8, "big")
        n = bytes([0x80 + len(raw)]) + raw
    payload = bytes([0x80 + len(addr)]) + addr + n
    return "0x" + keccak(bytes([0xC0 + len(payload)]) + payload)[12:].hex()


def create_gas(code: bytes) -> int:
    """A gas limit for creating a contract from ``code`` (creation code + constructor arguments):
    the intrinsic cost, the code deposit of a runtime as long as the creation code, and a margin
    for the constructor's execution (the constructors deployed here store a few words)."""
    words = (len(code) + 31) // 32
    return 53_000 + 16 * len(code) + 2 * words + 200 * len(code) + 1_000_000


class LocalNet:
    """Send, batch and read on a local node; see the module docstring."""

    rpc: Rpc
    abis: dict[str, Contract]
    _batching: list[tuple[str, list[Any]]] | None

    async def receipt(self, tx: str) -> dict[str, Any]:
        for _ in range(500):
            r = await self.rpc.call("eth_getTransactionReceipt", tx)
            if r is not None:
                if int(r["status"], 16) != 1:
                    raise TxFailed(f"transaction {tx} reverted")
                return dict(r)
            await _sleep(0.01)
        raise TxFailed(f"no receipt for {tx}")

    async def send(self, sender: str, to: str, abi: str, fn: str, *args: Any, check: bool = True,
                   gas: int = GAS) -> str:
        """Call ``fn`` on ``to`` from ``sender`` (unlocked or impersonated); in a ``batch`` the
        transaction is queued and its hash is returned unchecked."""
        tx = {"from": sender, "to": to, "data": self.abis[abi].call_data(fn, *args), "gas": hex(gas)}
        if self._batching is not None:
            self._batching.append(("eth_sendTransaction", [tx]))
            return ""
        h = str(await self.rpc.call("eth_sendTransaction", tx))
        if check:
            await self.receipt(h)
        return h

    async def deploy_code(self, code: bytes, *, sender: str = OWNER, gas: int | None = None) -> str:
        """Create a contract from ``code`` (creation code + ABI-encoded constructor arguments); its
        address. In a ``batch`` the creation is queued and ``""`` is returned (``create_address``
        tells where it will be)."""
        tx = {"from": sender, "data": "0x" + code.hex(), "gas": hex(create_gas(code) if gas is None else gas)}
        if self._batching is not None:
            self._batching.append(("eth_sendTransaction", [tx]))
            return ""
        receipt = await self.receipt(str(await self.rpc.call("eth_sendTransaction", tx)))
        return str(receipt["contractAddress"]).lower()

    @contextlib.asynccontextmanager
    async def batch(self, timestamp: int | None = None, chunk: int = 500) -> AsyncIterator[list[str]]:
        """Queue the ``send`` calls of the block, then mine them in one block (at ``timestamp``);
        yields the list that receives the transaction hashes. Transactions whose gas limits add
        up to more than the node's block gas limit go in as many blocks as needed, in order
        (anvil drops, rather than defers, what does not fit in the block it mines)."""
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
            counts = await self.rpc.batch([("eth_getTransactionCount", [a, "pending"]) for a in senders]
                                          + [("eth_getBlockByNumber", ["latest", False])])
            nonce = {a: int(c, 16) for a, c in zip(senders, counts[:-1], strict=True)}
            for _, (tx,) in queued:
                tx["nonce"] = hex(nonce[tx["from"]])
                nonce[tx["from"]] += 1
            for block in _blocks(queued, int(counts[-1]["gasLimit"], 16)):
                for i in range(0, len(block), chunk):
                    hashes.extend(str(h) for h in await self.rpc.batch(block[i:i + chunk]))
                if timestamp is not None:
                    await self.rpc.call("evm_setNextBlockTimestamp", hex(timestamp))
                    timestamp = None
                await self.rpc.call("evm_mine")
        finally:
            await self.rpc.call("evm_setAutomine", True)

    async def receipts(self, hashes: Sequence[str], chunk: int = 500) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i in range(0, len(hashes), chunk):
            part = hashes[i:i + chunk]
            out.extend(await self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in part]))
        return out

    async def impersonate(self, who: Sequence[str]) -> None:
        await self.rpc.batch([("anvil_impersonateAccount", [w]) for w in who])
        await self.rpc.batch([("anvil_setBalance", [w, hex(10**24)]) for w in who])

    async def view(self, abi: str, to: str, fn: str, *args: Any) -> tuple[Any, ...]:
        call = {"to": to, "data": self.abis[abi].call_data(fn, *args)}
        data = await self.rpc.call("eth_call", call, "latest")
        return self.abis[abi].decode_return(fn, data)

    async def events(self, address: str, abi: str, name: str) -> list[dict[str, Any]]:
        """Every ``name`` event ``address`` emitted so far, decoded with ``abi``: its arguments,
        plus ``_tx`` (the transaction hash) and ``_block`` (the block number)."""
        topic = self.abis[abi].topics[name]
        logs = await self.rpc.call("eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest",
                                                   "address": address, "topics": [topic]})
        out = []
        for raw in logs:
            decoded = self.abis[abi].decode_log(raw)
            if decoded is None:
                raise TxFailed(f"a {name} log of {address} does not decode with the {abi} ABI")
            out.append({**decoded[1], "_tx": str(raw["transactionHash"]),
                        "_block": int(raw["blockNumber"], 16)})
        return out

    async def block_time(self) -> int:
        return int((await self.rpc.call("eth_getBlockByNumber", "latest", False))["timestamp"], 16)


def _blocks(queued: list[tuple[str, list[Any]]], gas_limit: int) -> list[list[tuple[str, list[Any]]]]:
    """``queued`` cut, in order, into runs whose gas limits fit in a block."""
    out: list[list[tuple[str, list[Any]]]] = [[]]
    used = 0
    for q in queued:
        gas = int(q[1][0].get("gas", hex(GAS)), 16)
        if out[-1] and used + gas > gas_limit:
            out.append([])
            used = 0
        out[-1].append(q)
        used += gas
    return out


async def _sleep(s: float) -> None:
    await asyncio.sleep(s)
