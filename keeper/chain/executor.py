"""The chain executor: one recorded intent, one signed transaction, exactly once on chain.

``execute(decision)`` (driven by ``keeper.execution.runner.Runner``, as every executor is):

1. **Known intent?** If this intent already has a signed transaction in the log
   (``ChainTxSigned``, read at ``start`` and kept since), its receipt is looked up by each
   recorded hash; if none is mined, the newest recorded transaction is broadcast again (the node
   answers "already known" or takes it). Nothing new is signed for it, except a fee bump or a
   lost nonce below.
2. **Simulate.** ``eth_call`` of ``liquidate(marketParams, borrower, seizedAssets, repaidShares,
   "")`` from the liquidator: a revert is ``PermanentError`` with the decoded reason ("position
   is healthy"), and nothing is sent.
3. **Sign and record.** Gas is estimated and raised by ``gas_margin`` (an estimate at ``latest``
   can miss interest accrual), capped at ``gas_cap``; fees are EIP-1559 (twice the base fee plus
   the node's tip, capped at ``max_fee_per_gas``). The transaction is signed with the next
   nonce and recorded in the log as ``ChainTxSigned`` **before** it is broadcast.
4. **Broadcast and wait.** The receipt decides: status 1 gives the ``Liquidate`` event's
   repaid and seized amounts; status 0 is ``PermanentError`` ("out of gas" when all the gas was
   used, else the revert reason replayed at the receipt's block). A transaction not mined within
   ``replace_after_s`` is replaced with the same nonce and fees raised by ``fee_bump`` (recorded
   first, as attempt 2, 3, ...) while under the cap.
5. **Lost nonce.** If the node says the nonce is used and no recorded hash has a receipt,
   another transaction of this account took the nonce: the nonce is read again from the chain
   and the intent signed anew under it (recorded first), since the old one can never be mined.

Nonces: at ``start`` the next nonce is the larger of the chain's pending count and one past the
largest recorded nonce, and every recorded transaction whose nonce the chain has not used yet is
broadcast again, so a crash between recording and broadcasting leaves no gap. The private key
is given to the constructor (the daemon reads it from the environment) and never logged.

``KEEPER_TEST_CRASH_AT`` = ``before_broadcast`` or ``after_broadcast`` makes the process exit
there (crash tests only; the runner's own points cover the rest).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

import rlp
import structlog
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from keeper.chain.abi import Contract, revert_reason
from keeper.chain.artifacts import error_names
from keeper.chain.rpc import ChainUnavailable, Rpc, RpcError
from keeper.clock import wall_clock_us
from keeper.domain import events as ev
from keeper.errors import PermanentError, TransientError
from keeper.execution.base import Submission
from keeper.ports import EventLog

__all__ = ["CRASH_ENV", "MAX_UINT256", "ChainExecutor", "LiquidationVenue", "named"]

_log = structlog.get_logger("keeper.chain.executor")
CRASH_ENV = "KEEPER_TEST_CRASH_AT"
MAX_UINT256 = (1 << 256) - 1
_AAVE_ERRORS = error_names("aave-v3")
_NONCE_USED = ("nonce too low", "nonce has already been used", "already known", "replacement transaction")


class LiquidationVenue(Protocol):
    """What the executor needs of a venue (``MorphoVenue``, ``AaveVenue``)."""

    erc20: Contract

    @property
    def address(self) -> str:
        """The contract called (and approved to pull the repaid tokens)."""
        ...

    async def liquidation_call(self, decision: ev.Decision) -> tuple[str, str]:
        """``(token to approve, calldata)`` of the decision's liquidation."""
        ...

    def outcome(self, logs: Sequence[Mapping[str, Any]]) -> tuple[int, int] | None:
        """``(repaid, seized)`` from a receipt's logs: the contract's own liquidation event."""
        ...


class ChainExecutor:
    """Submits a venue's liquidations from one account (module docstring)."""

    name = "chain"

    def __init__(
        self,
        rpc: Rpc,
        log: EventLog,
        venue: LiquidationVenue,
        *,
        chain_id: int,
        private_key: str,
        gas_margin: float = 1.5,
        gas_cap: int = 2_000_000,
        max_fee_per_gas: int = 500 * 10**9,
        fee_bump: float = 1.125,
        replace_after_s: float = 15.0,
        receipt_timeout_s: float = 120.0,
        poll_s: float = 0.02,
        now_us: Callable[[], int] = wall_clock_us,
        crash_at: str | None = None,
    ) -> None:
        self.rpc = rpc
        self.log = log
        self.venue = venue
        self.chain_id = chain_id
        self._account: LocalAccount = Account.from_key(private_key)
        self.sender = self._account.address.lower()
        self.gas_margin = gas_margin
        self.gas_cap = gas_cap
        self.max_fee_per_gas = max_fee_per_gas
        self.fee_bump = fee_bump
        self.replace_after_s = replace_after_s
        self.receipt_timeout_s = receipt_timeout_s
        self.poll_s = poll_s
        self.now_us = now_us
        self.crash_at = crash_at if crash_at is not None else os.environ.get(CRASH_ENV) or None
        self.signed: dict[str, list[ev.ChainTxSigned]] = {}
        """intent id -> its recorded transactions, oldest first."""
        self._nonce: int | None = None
        self._nonce_lock = asyncio.Lock()
        self._approved: set[str] = set()
        self.gas_used = 0
        self.counts: dict[str, int] = {}
        self._waiting: set[str] = set()

    # ------------------------------------------------------------------ start

    async def start(self, tokens: list[str] | None = None) -> None:
        """Read this account's recorded transactions, reconcile nonces, approve ``tokens``."""
        after = "0-0"
        while True:
            entries, nxt = await self.log.read_batch(after, 5_000)
            for entry in entries:
                e = entry.event
                if isinstance(e, ev.ChainTxSigned) and (e.sender, e.chain_id) == (self.sender, self.chain_id):
                    self.signed.setdefault(e.intent_id, []).append(e)
            if nxt == after or not entries:
                break
            after = nxt
        latest = int(await self.rpc.call("eth_getTransactionCount", self.sender, "latest"), 16)
        pending = int(await self.rpc.call("eth_getTransactionCount", self.sender, "pending"), 16)
        recorded = [t for txs in self.signed.values() for t in txs]
        top = max((t.nonce for t in recorded), default=-1)
        self._nonce = max(pending, top + 1)
        resent = 0
        for t in sorted(recorded, key=lambda t: (t.nonce, t.attempt)):
            if t.nonce >= latest:
                await self._broadcast(t.raw_tx)
                resent += 1
        _log.info("chain_executor_started", sender=self.sender, nonce_latest=latest, nonce_pending=pending,
                  next_nonce=self._nonce, recorded=len(recorded), rebroadcast=resent)
        for token in tokens or []:
            await self._approve(token)

    async def close(self) -> None:
        await self.rpc.close()

    @property
    def next_nonce(self) -> int | None:
        return self._nonce

    def pending(self) -> list[ev.ChainTxSigned]:
        """The newest signed transaction of each intent this process is still waiting on."""
        return [txs[-1] for intent, txs in self.signed.items() if intent in self._waiting]

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _crash(self, point: str) -> None:
        if self.crash_at == point:
            _log.warning("test_crash", point=point)
            os._exit(137)

    # ------------------------------------------------------------------ the Executor port

    async def submit(self, decision: ev.Decision) -> tuple[str | None, bool]:
        s = await self.execute(decision)
        return s.ref, s.duplicate

    async def execute(self, decision: ev.Decision) -> Submission:
        txs = self.signed.get(decision.intent_id)
        if txs:
            self._count("resumed")
            return await self._settle(decision, txs, resend=True)
        token, data = await self.venue.liquidation_call(decision)
        await self._approve(token)
        call = {"from": self.sender, "to": self.venue.address, "data": data}
        try:  # the simulation, the estimate and the fees in one round trip
            _, gas_hex, block, tip_hex = await self.rpc.batch([
                ("eth_call", [call, "latest"]), ("eth_estimateGas", [call]),
                ("eth_getBlockByNumber", ["latest", False]), ("eth_maxPriorityFeePerGas", [])])
        except RpcError as exc:
            self._count("simulated_revert")
            head = await self.rpc.call("eth_blockNumber")
            raise PermanentError(f"simulation reverted: {_reason(exc)} (at block {int(head, 16)})") from None
        gas = min(self.gas_cap, int(int(gas_hex, 16) * self.gas_margin))
        tx = await self._sign_record(decision.intent_id, {**call, "gas": gas}, attempt=1,
                                     fees=self._fee_caps(block, tip_hex))
        self._crash("before_broadcast")
        return await self._settle(decision, [tx], resend=False)

    # ------------------------------------------------------------------ signing

    async def _fees(self, bump: float = 1.0) -> tuple[int, int]:
        block, tip_hex = await self.rpc.batch([("eth_getBlockByNumber", ["latest", False]),
                                               ("eth_maxPriorityFeePerGas", [])])
        return self._fee_caps(block, tip_hex, bump)

    def _fee_caps(self, block: dict[str, Any], tip_hex: str, bump: float = 1.0) -> tuple[int, int]:
        """(max fee, tip): twice the base fee plus the node's tip, times ``bump``, at most the cap."""
        base = int(block.get("baseFeePerGas") or "0x0", 16)
        tip = max(1, int(int(tip_hex, 16) * bump))
        max_fee = min(self.max_fee_per_gas, int((2 * base + tip) * bump))
        return max_fee, min(tip, max_fee)

    async def _sign_record(self, intent: str, call: dict[str, Any], *, attempt: int,
                           nonce: int | None = None, fees: tuple[int, int] | None = None) -> ev.ChainTxSigned:
        max_fee, tip = fees if fees is not None else await self._fees()
        async with self._nonce_lock:
            if nonce is None:
                assert self._nonce is not None, "start() first"
                nonce = self._nonce
                self._nonce += 1
            fields: dict[str, Any] = {
                "chainId": self.chain_id, "nonce": nonce, "to": _checksum(call["to"]), "data": call["data"],
                "gas": call["gas"], "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip, "value": 0,
                "type": 2}
            signed = self._account.sign_transaction(fields)
            tx = ev.ChainTxSigned(
                event_id=f"tx:{intent}#{attempt}", ts_event=self.now_us(), causation_id=intent,
                intent_id=intent, chain_id=self.chain_id, sender=self.sender, nonce=nonce,
                tx_hash="0x" + bytes(signed.hash).hex(), raw_tx="0x" + bytes(signed.raw_transaction).hex(),
                max_fee_per_gas=max_fee, attempt=attempt)
            # recorded before it can reach the chain: a restart finds it and sends it again
            ids = await self.log.append([tx])
        if ids[0] is None:  # recorded already (a concurrent handler): use the recorded one
            self._count("sign_duplicate")
        self.signed.setdefault(intent, []).append(tx)
        return tx

    async def _broadcast(self, raw: str) -> str | None:
        """Send a signed transaction; ``None`` if sent (or known), else the node's refusal."""
        try:
            await self.rpc.call("eth_sendRawTransaction", raw)
        except RpcError as exc:
            msg = exc.rpc_message.lower()
            if "already known" in msg or "already imported" in msg:
                return None
            return msg
        return None

    async def _approve(self, token: str) -> None:
        if token in self._approved:
            return
        data = self.venue.erc20.call_data("allowance", _checksum(self.sender), _checksum(self.venue.address))
        got = int(await self.rpc.call("eth_call", {"to": token, "data": data}, "latest"), 16)
        if got < MAX_UINT256 // 2:
            call = {"from": self.sender, "to": token,
                    "data": self.venue.erc20.call_data("approve", _checksum(self.venue.address), MAX_UINT256)}
            call["gas"] = int(int(await self.rpc.call("eth_estimateGas", call), 16) * self.gas_margin)
            tx = await self._sign_record(f"approve:{token}", call, attempt=1)
            err = await self._broadcast(tx.raw_tx)
            if err is not None:
                raise TransientError(f"approve of {token} refused: {err}")
            receipt = await self._wait_receipt([tx.tx_hash], self.receipt_timeout_s)
            if receipt is None or int(receipt["status"], 16) != 1:
                raise TransientError(f"approve of {token} did not succeed")
        self._approved.add(token)

    # ------------------------------------------------------------------ receipts

    async def _receipt_of(self, hashes: list[str]) -> dict[str, Any] | None:
        replies = await self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
        return next((r for r in replies if r), None)

    async def _wait_receipt(self, hashes: list[str], timeout_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        while True:
            r = await self._receipt_of(hashes)
            if r is not None or time.monotonic() >= deadline:
                return r
            await asyncio.sleep(self.poll_s)

    async def _settle(self, decision: ev.Decision, txs: list[ev.ChainTxSigned], *,
                      resend: bool) -> Submission:
        """Broadcast (again) the newest transaction of the intent and wait for its outcome,
        replacing it with higher fees while it is stuck."""
        intent = decision.intent_id
        self._waiting.add(intent)
        try:
            return await self._settle_waiting(decision, txs, resend=resend)
        finally:
            self._waiting.discard(intent)

    async def _settle_waiting(self, decision: ev.Decision, txs: list[ev.ChainTxSigned], *,
                              resend: bool) -> Submission:
        intent = decision.intent_id
        receipt = await self._receipt_of([t.tx_hash for t in txs]) if resend else None
        if receipt is None:
            err = await self._broadcast(txs[-1].raw_tx)
            if err is not None and any(m in err for m in _NONCE_USED):
                receipt = await self._receipt_of([t.tx_hash for t in txs])
                if receipt is None and "nonce" in err:
                    return await self._lost_nonce(decision, txs)
            elif err is not None:
                raise TransientError(f"broadcast refused: {err}")
            self._crash("after_broadcast")
        started = time.monotonic()
        while receipt is None:
            receipt = await self._wait_receipt([t.tx_hash for t in txs], self.replace_after_s)
            if receipt is not None:
                break
            if time.monotonic() - started > self.receipt_timeout_s:
                raise TransientError(f"no receipt for {intent} within {self.receipt_timeout_s} s")
            txs = await self._bump(decision, txs)
        return await self._outcome(decision, receipt, txs)

    async def _bump(self, decision: ev.Decision, txs: list[ev.ChainTxSigned]) -> list[ev.ChainTxSigned]:
        last = txs[-1]
        if last.max_fee_per_gas >= self.max_fee_per_gas:
            return txs  # at the cap: keep waiting for the one sent
        max_fee, tip = await self._fees(self.fee_bump ** last.attempt)
        max_fee = max(max_fee, min(self.max_fee_per_gas, int(last.max_fee_per_gas * self.fee_bump) + 1))
        call = _decode_call(last.raw_tx)
        tx = await self._sign_record(decision.intent_id, call, attempt=last.attempt + 1, nonce=last.nonce,
                                     fees=(max_fee, min(tip, max_fee)))
        self._count("replaced")
        _log.info("chain_tx_replaced", intent_id=decision.intent_id, nonce=last.nonce, attempt=tx.attempt,
                  max_fee_per_gas=max_fee)
        err = await self._broadcast(tx.raw_tx)
        if err is not None:
            _log.info("chain_tx_replace_refused", intent_id=decision.intent_id, error=err)
        return [*txs, tx]

    async def _lost_nonce(self, decision: ev.Decision, txs: list[ev.ChainTxSigned]) -> Submission:
        """The nonce was used by another transaction of this account: sign anew under a fresh one."""
        self._count("nonce_lost")
        async with self._nonce_lock:
            self._nonce = max(self._nonce or 0,
                              int(await self.rpc.call("eth_getTransactionCount", self.sender, "pending"), 16))
        call = _decode_call(txs[-1].raw_tx)
        _log.warning("chain_nonce_lost", intent_id=decision.intent_id, nonce=txs[-1].nonce)
        tx = await self._sign_record(decision.intent_id, call, attempt=txs[-1].attempt + 1)
        return await self._settle(decision, [*txs, tx], resend=False)

    async def _outcome(self, decision: ev.Decision, receipt: dict[str, Any],
                       txs: list[ev.ChainTxSigned]) -> Submission:
        block = int(receipt["blockNumber"], 16)
        used = int(receipt["gasUsed"], 16)
        self.gas_used += used
        tx_hash = str(receipt["transactionHash"])
        if int(receipt["status"], 16) != 1:
            sent = next((t for t in txs if t.tx_hash == tx_hash), txs[-1])
            reason = await self._why_reverted(sent, block, used)
            self._count("reverted")
            raise PermanentError(f"transaction {tx_hash} reverted in block {block}: {reason}")
        amounts = self.venue.outcome(receipt.get("logs", []))
        if amounts is None:
            raise PermanentError(f"transaction {tx_hash} succeeded without the venue's liquidation event")
        self._count("confirmed")
        return Submission(tx_hash, False, [], block, Decimal(amounts[0]), Decimal(amounts[1]))

    async def _why_reverted(self, tx: ev.ChainTxSigned, block: int, used: int) -> str:
        call = _decode_call(tx.raw_tx)
        if used >= call["gas"]:
            return f"out of gas ({used} of {call['gas']})"
        try:  # replayed on the state the block left: what made it revert is still there
            await self.rpc.call("eth_call", {"from": self.sender, "to": call["to"], "data": call["data"],
                                             "gas": hex(call["gas"])}, hex(block))
        except RpcError as exc:
            return _reason(exc)
        except ChainUnavailable:
            pass
        return "reverted (no reason given)"


def _reason(exc: RpcError) -> str:
    data = exc.data if isinstance(exc.data, str) else (exc.data or {}).get("data") if isinstance(
        exc.data, dict) else None
    if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
        text = revert_reason(data)
    else:
        text = exc.rpc_message.removeprefix("execution reverted: ").strip() or "reverted"
    return named(text)


def named(reason: str) -> str:
    """A protocol's numeric revert code with its name (Aave: ``45`` -> ``45 (HEALTH_FACTOR_NOT_
    BELOW_THRESHOLD)``); any other reason as it is."""
    name = _AAVE_ERRORS.get(reason.strip())
    return f"{reason.strip()} ({name})" if name else reason


def _checksum(address: str) -> str:
    return str(to_checksum_address(address))


def _decode_call(raw_tx: str) -> dict[str, Any]:
    """``to``, ``data`` and ``gas`` of a signed EIP-1559 transaction (``0x02 || rlp([chainId,
    nonce, tip, maxFee, gas, to, value, data, accessList, v, r, s])``), to sign its replacement."""
    fields = rlp.decode(bytes.fromhex(raw_tx[2:])[1:])
    gas, to, data = fields[4], fields[5], fields[7]
    return {"to": "0x" + bytes(to).hex(), "data": "0x" + bytes(data).hex(), "gas": int.from_bytes(gas, "big")}
