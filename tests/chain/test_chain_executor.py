"""The chain executor against Morpho Blue's bytecode: refusals with the contract's reason, out of gas,
a nonce taken by another transaction, a stuck transaction replaced, a restart that sends the
recorded transaction again, and never a second liquidation for one intent."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from eth_account import Account

from keeper.chain.executor import ChainExecutor
from keeper.chain.morpho import MorphoVenue
from keeper.chain.rpc import Rpc
from keeper.chain.testnet import OWNER, LocalMorpho
from keeper.domain import events as ev
from keeper.domain.morpho.liquidation import max_borrow
from keeper.errors import PermanentError
from keeper.testing import MemoryEventLog
from tests.chain.conftest import LIQUIDATOR_KEY

LLTV = 860 * 10**15
PRICE = 2_000 * 10**24
LIQUIDATOR = Account.from_key(LIQUIDATOR_KEY).address.lower()
BORROWER = "0x" + "ab" * 20


async def one_position(net: LocalMorpho, share: float) -> str:
    loan, coll = await net.token(), await net.token()
    mid = await net.create_market(loan, coll, LLTV, PRICE)
    await net.supply(mid, 10**18)
    await net.fund(coll, OWNER, 10**30)
    await net.approve_collateral(mid)
    await net.impersonate([BORROWER])
    await net.collateral(mid, BORROWER, 10**18)
    await net.borrow(mid, BORROWER, int(max_borrow(10**18, PRICE, LLTV) * share))
    await net.rpc.call("anvil_setBalance", LIQUIDATOR, hex(10**22))
    await net.fund(loan, LIQUIDATOR, 10**30)
    return mid


def decision(mid: str, seize: int, intent: str = "liq:b/m@1-0") -> ev.Decision:
    return ev.Decision(intent_id=intent, account=BORROWER, bucket=mid, trigger="1-0", trigger_event_id="blk",
                       profile="morpho-blue", rule="test", action="repay_seize", market=mid,
                       seize_amount=Decimal(seize))


async def executor(net: LocalMorpho, log: MemoryEventLog, **kw: float) -> ChainExecutor:
    x = ChainExecutor(Rpc(net.rpc.url), log, MorphoVenue(net.rpc, net.morpho), chain_id=31337,
                      private_key=LIQUIDATOR_KEY, **kw)  # type: ignore[arg-type]
    await x.start()
    return x


async def liquidations(net: LocalMorpho) -> int:
    return len(await net.events(net.morpho, "Morpho", "Liquidate"))


async def test_a_healthy_position_is_refused_by_simulation_with_the_contracts_reason(
        morpho: LocalMorpho) -> None:
    mid = await one_position(morpho, 0.5)
    log = MemoryEventLog()
    x = await executor(morpho, log)
    with pytest.raises(PermanentError, match="position is healthy"):
        await x.execute(decision(mid, 10**15))
    assert not [e for e in await log.read("0-0", 100) if isinstance(e.event, ev.ChainTxSigned)
                and e.event.intent_id.startswith("liq:")], "nothing signed after a simulated revert"
    assert await liquidations(morpho) == 0
    await x.close()


async def test_an_out_of_gas_receipt_is_a_rejection_naming_it(morpho: LocalMorpho) -> None:
    mid = await one_position(morpho, 0.99)
    await morpho.set_price(mid, PRICE * 8 // 10)
    x = await executor(morpho, MemoryEventLog(), gas_cap=60_000)
    with pytest.raises(PermanentError, match="out of gas"):
        await x.execute(decision(mid, 10**15))
    assert await liquidations(morpho) == 0
    await x.close()


async def test_a_nonce_taken_by_another_transaction_is_signed_anew_once(morpho: LocalMorpho) -> None:
    mid = await one_position(morpho, 0.99)
    await morpho.set_price(mid, PRICE * 8 // 10)
    log = MemoryEventLog()
    x = await executor(morpho, log)
    await x.execute(decision(mid, 10**15, "liq:approve-first@0"))  # approvals done, one liquidation
    # another program uses the liquidator's next nonce
    nonce = int(await morpho.rpc.call("eth_getTransactionCount", LIQUIDATOR, "pending"), 16)
    other = Account.from_key(LIQUIDATOR_KEY).sign_transaction({
        "chainId": 31337, "nonce": nonce, "to": Account.from_key(LIQUIDATOR_KEY).address, "value": 0,
        "gas": 21_000, "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "type": 2})
    await morpho.rpc.call("eth_sendRawTransaction", "0x" + bytes(other.raw_transaction).hex())
    sub = await x.execute(decision(mid, 10**15, "liq:second@2"))
    assert sub.ref is not None and sub.seized == 10**15
    assert x.counts.get("nonce_lost") == 1
    signed = [e.event for e in await log.read("0-0", 100) if isinstance(e.event, ev.ChainTxSigned)
              and e.event.intent_id == "liq:second@2"]
    assert [t.attempt for t in signed] == [1, 2] and signed[0].nonce == nonce != signed[1].nonce
    assert await liquidations(morpho) == 2
    await x.close()


async def test_a_stuck_transaction_is_replaced_with_the_same_nonce_and_lands_once(
        morpho: LocalMorpho) -> None:
    mid = await one_position(morpho, 0.99)
    await morpho.set_price(mid, PRICE * 8 // 10)
    log = MemoryEventLog()
    x = await executor(morpho, log, replace_after_s=0.3)
    await x.execute(decision(mid, 10**15, "liq:warm-up@0"))  # approvals mined first
    await morpho.rpc.call("evm_setAutomine", False)
    task = asyncio.ensure_future(x.execute(decision(mid, 10**15, "liq:stuck@9")))
    try:
        async def bumped() -> bool:
            return x.counts.get("replaced", 0) >= 1

        for _ in range(100):
            if await bumped():
                break
            await asyncio.sleep(0.05)
        assert await bumped(), "the stuck transaction was not replaced"
        await morpho.rpc.call("evm_mine")
        sub = await asyncio.wait_for(task, 20)
    finally:
        await morpho.rpc.call("evm_setAutomine", True)
    signed = [e.event for e in await log.read("0-0", 100) if isinstance(e.event, ev.ChainTxSigned)
              and e.event.intent_id == "liq:stuck@9"]
    assert len({t.nonce for t in signed}) == 1 and len(signed) >= 2
    assert signed[1].max_fee_per_gas > signed[0].max_fee_per_gas
    assert sub.ref in {t.tx_hash for t in signed}
    assert await liquidations(morpho) == 2  # the warm-up and this one: the replacement landed once
    await x.close()


async def test_a_restarted_executor_sends_the_recorded_transaction_never_a_new_one(
        morpho: LocalMorpho) -> None:
    mid = await one_position(morpho, 0.99)
    await morpho.set_price(mid, PRICE * 8 // 10)
    log = MemoryEventLog()
    first = await executor(morpho, log)
    await first.execute(decision(mid, 10**15, "liq:warm-up@0"))
    # signed and recorded, then the process died before broadcasting
    d = decision(mid, 10**15, "liq:crashed@5")
    params = await first.venue.market_params(mid)
    call = {"from": first.sender, "to": first.venue.address,
            "data": first.venue.liquidate_data(params, BORROWER, 10**15, 0), "gas": 400_000}
    recorded = await first._sign_record(d.intent_id, call, attempt=1)
    await first.close()
    second = await executor(morpho, log)  # start: reads the record, sends it again (no gap)
    sub = await second.execute(d)
    assert sub.ref == recorded.tx_hash
    signed = [e.event for e in await log.read("0-0", 100) if isinstance(e.event, ev.ChainTxSigned)
              and e.event.intent_id == d.intent_id]
    assert len(signed) == 1
    assert await liquidations(morpho) == 2
    again = await second.execute(d)  # asked again (a redelivered intent): the same receipt
    assert again.ref == recorded.tx_hash and await liquidations(morpho) == 2
    await second.close()
