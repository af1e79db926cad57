"""Chain fixtures: a private anvil per test session (killed by PID at the end), Morpho Blue
deployed on it from the committed artifacts, and ``evm_snapshot``/``evm_revert`` around each
test that asks for ``morpho`` so every test starts from the same chain.

No test here skips for want of anvil: ``make setup`` installs it from the npm lockfile.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from keeper.chain.anvil import Anvil
from keeper.chain.rpc import Rpc
from keeper.chain.testnet import LocalMorpho

LLTVS = [385 * 10**15, 625 * 10**15, 770 * 10**15, 860 * 10**15, 915 * 10**15, 945 * 10**15,
         965 * 10**15, 980 * 10**15]
"""The LLTVs Morpho's governance enabled on Ethereum (0.385 ... 0.98)."""

LIQUIDATOR_KEY = "0x" + "5e" * 32
"""A test key (not a secret): the liquidator's account on the private node."""


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    node = Anvil().start(chain_id=31337, extra_args=["--disable-block-gas-limit", "--base-fee", "1"])
    try:
        yield node
    finally:
        node.stop()


@pytest_asyncio.fixture(loop_scope="function")
async def chain(anvil: Anvil) -> AsyncIterator[Rpc]:
    """An RPC client of the session's node; the chain is reverted to its state before the test."""
    rpc = Rpc(anvil.http_url, timeout_s=60)
    snap = await rpc.call("evm_snapshot")
    try:
        yield rpc
    finally:
        await rpc.call("evm_setAutomine", True)
        await rpc.call("evm_revert", snap)
        await rpc.close()


@pytest_asyncio.fixture(loop_scope="function")
async def morpho(chain: Rpc) -> LocalMorpho:
    """Morpho Blue, the IRM mock and the enabled LLTVs on the node (reverted after the test)."""
    return await LocalMorpho.deploy(chain, LLTVS)
