"""An Aave v3 pool on a local node, from the committed artifacts (``aave-v3``): tests, bench, demo.

``LocalAave.deploy`` deploys Aave's own compiled bytecode from anvil's unlocked ``OWNER``: the
logic libraries (FlashLoanLogic linked to BorrowLogic), the Pool and the PoolConfigurator linked
to them, the addresses provider (which creates and initialises the pool's and the configurator's
proxies), the ACL manager (``OWNER`` is ACL admin, pool admin and emergency admin), the
``PriceOracle`` mock (prices in USD at 1e8, the base currency), the protocol data provider, the
token implementations and one interest rate strategy. The transactions go in two blocks (the
token implementations need the pool's proxy): contract addresses are predicted from ``OWNER``'s
nonces (``create_address``) and checked against the receipts.

``add_reserve`` lists a ``MintableERC20`` with its risk parameters and price (one block); users
(impersonated) ``supply``, ``borrow``, ``repay`` and ``withdraw`` minting what they need;
``liquidate`` calls the pool's ``liquidationCall``. Everything goes through the contracts' own
transactions; a reverted one raises ``TxFailed`` naming the step.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import encode as abi_encode

from keeper.chain.abi import Contract
from keeper.chain.artifacts import Contract as Artifact
from keeper.chain.artifacts import link, load
from keeper.chain.localnet import GAS, OWNER, LocalNet, TxFailed, create_address, create_gas
from keeper.chain.rpc import Rpc

__all__ = [
    "INIT_RESERVES_GAS",
    "MARKET_ID",
    "MAX_UINT",
    "OWNER",
    "RATES",
    "RAY",
    "VARIABLE",
    "ZERO_ADDRESS",
    "LocalAave",
    "TxFailed",
]

RAY = 10**27
MAX_UINT = (1 << 256) - 1
ZERO_ADDRESS = "0x" + "00" * 20
VARIABLE = 2
"""``interestRateMode`` of a variable-rate borrow."""
MARKET_ID = "keeper"
RATES = {  # DefaultReserveInterestRateStrategy's constructor, by argument name (rays)
    "optimalUsageRatio": 8 * RAY // 10,
    "baseVariableBorrowRate": 0,
    "variableRateSlope1": 4 * RAY // 100,
    "variableRateSlope2": 75 * RAY // 100,
    "stableRateSlope1": 2 * RAY // 100,
    "stableRateSlope2": 75 * RAY // 100,
    "baseStableRateOffset": 2 * RAY // 100,
    "stableRateExcessOffset": 5 * RAY // 100,
    "optimalStableToTotalDebtRatio": 2 * RAY // 10,
}
INIT_RESERVES_GAS = 6_000_000


def _ctor_args(art: Artifact, args: dict[str, Any]) -> bytes:
    """``args`` (by the constructor's parameter names) ABI-encoded in the constructor's order."""
    ctor: dict[str, Any] = next((e for e in art.abi if e.get("type") == "constructor"), {"inputs": []})
    names = [str(i["name"]) for i in ctor["inputs"]]
    if sorted(names) != sorted(args):
        raise ValueError(f"{art.name}'s constructor takes {names}, given {sorted(args)}")
    return abi_encode([str(i["type"]) for i in ctor["inputs"]], [args[n] for n in names])


def _link_order(arts: dict[str, Artifact], roots: list[str]) -> list[str]:
    """The libraries ``roots`` link, transitively, each after the libraries it links."""
    out: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        for lib in arts[name].libraries:
            if lib in path:
                raise ValueError(f"library cycle: {' -> '.join((*path, lib))}")
            if lib not in out:
                visit(lib, (*path, lib))
                out.append(lib)

    for root in roots:
        visit(root, (root,))
    return out


@dataclass
class LocalAave(LocalNet):
    """An Aave v3 pool on the node at ``rpc``: addresses of its parts, ``assets`` by symbol,
    ``decimals`` by asset address, ``libraries`` by name."""

    rpc: Rpc
    provider: str = ""
    acl: str = ""
    pool: str = ""
    configurator: str = ""
    oracle: str = ""
    data_provider: str = ""
    strategy: str = ""
    a_token_impl: str = ""
    stable_debt_impl: str = ""
    variable_debt_impl: str = ""
    treasury: str = OWNER
    libraries: dict[str, str] = field(default_factory=dict)
    assets: dict[str, str] = field(default_factory=dict)
    decimals: dict[str, int] = field(default_factory=dict)
    abis: dict[str, Contract] = field(default_factory=dict)
    _batching: list[tuple[str, list[Any]]] | None = None
    _steps: list[tuple[str, str | None]] = field(default_factory=list)
    _nonce: int = 0
    _impersonated: set[str] = field(default_factory=set)

    # ------------------------------------------------------------------ deployment

    @classmethod
    async def deploy(cls, rpc: Rpc) -> LocalAave:
        arts = load("aave-v3")
        net = cls(rpc, abis={name: Contract(_abi(a)) for name, a in arts.items()})
        await rpc.call("anvil_setBalance", OWNER, hex(10**30))
        async with net._block():
            for lib in _link_order(arts, ["Pool", "PoolConfigurator"]):
                net.libraries[lib] = net._create(lib)
            net.provider = net._create("PoolAddressesProvider", {"marketId": MARKET_ID, "owner": OWNER})
            net._call(net.provider, "PoolAddressesProvider", "setACLAdmin", OWNER)
            net.acl = net._create("ACLManager", {"provider": net.provider})
            net._call(net.provider, "PoolAddressesProvider", "setACLManager", net.acl)
            net._call(net.acl, "ACLManager", "addPoolAdmin", OWNER)
            net._call(net.acl, "ACLManager", "addEmergencyAdmin", OWNER)
            pool_impl = net._create("Pool", {"provider": net.provider})
            net._call(net.provider, "PoolAddressesProvider", "setPoolImpl", pool_impl)
            conf_impl = net._create("PoolConfigurator")
            net._call(net.provider, "PoolAddressesProvider", "setPoolConfiguratorImpl", conf_impl)
            net.oracle = net._create("PriceOracle")
            net._call(net.provider, "PoolAddressesProvider", "setPriceOracle", net.oracle)
            net.data_provider = net._create("AaveProtocolDataProvider", {"addressesProvider": net.provider})
            net._call(net.provider, "PoolAddressesProvider", "setPoolDataProvider", net.data_provider)
            net.strategy = net._create("DefaultReserveInterestRateStrategy",
                                       {"provider": net.provider, **RATES})
        # the provider created the proxies: the token implementations take the pool's
        pool, conf = await rpc.batch([
            ("eth_call", [{"to": net.provider, "data": net.abis["PoolAddressesProvider"].call_data(fn)},
                          "latest"]) for fn in ("getPool", "getPoolConfigurator")])
        net.pool = "0x" + str(pool)[-40:]
        net.configurator = "0x" + str(conf)[-40:]
        async with net._block():
            net.a_token_impl = net._create("AToken", {"pool": net.pool})
            net.stable_debt_impl = net._create("StableDebtToken", {"pool": net.pool})
            net.variable_debt_impl = net._create("VariableDebtToken", {"pool": net.pool})
        return net

    async def add_reserve(self, symbol: str, decimals: int, *, ltv_bps: int, threshold_bps: int,
                          bonus_bps: int, reserve_factor_bps: int, protocol_fee_bps: int, price8: int) -> str:
        """List a new ``MintableERC20`` as a reserve (collateral and borrowable, variable rate) at
        ``price8`` (USD, 1e8); its address. ``bonus_bps`` includes the principal (10500: 5%)."""
        init = self.abis["PoolConfigurator"].functions["initReserves"]["inputs"][0]["components"]
        async with self._block():
            asset = self._create("MintableERC20",
                                 {"name": f"Test {symbol}", "symbol": symbol, "decimals": decimals})
            fields: dict[str, Any] = {
                "aTokenImpl": self.a_token_impl, "stableDebtTokenImpl": self.stable_debt_impl,
                "variableDebtTokenImpl": self.variable_debt_impl, "underlyingAssetDecimals": decimals,
                "interestRateStrategyAddress": self.strategy, "underlyingAsset": asset,
                "treasury": self.treasury, "incentivesController": ZERO_ADDRESS,
                "aTokenName": f"Aave {symbol}", "aTokenSymbol": f"a{symbol}",
                "variableDebtTokenName": f"Aave variable debt {symbol}",
                "variableDebtTokenSymbol": f"variableDebt{symbol}",
                "stableDebtTokenName": f"Aave stable debt {symbol}",
                "stableDebtTokenSymbol": f"stableDebt{symbol}",
                "params": b"",
            }
            struct = tuple(fields[str(c["name"])] for c in init)
            conf = self.configurator
            self._call(conf, "PoolConfigurator", "initReserves", [struct], gas=INIT_RESERVES_GAS)
            self._call(conf, "PoolConfigurator", "configureReserveAsCollateral",
                       asset, ltv_bps, threshold_bps, bonus_bps)
            self._call(conf, "PoolConfigurator", "setReserveBorrowing", asset, True)
            self._call(conf, "PoolConfigurator", "setReserveFactor", asset, reserve_factor_bps)
            self._call(conf, "PoolConfigurator", "setLiquidationProtocolFee", asset, protocol_fee_bps)
            self._call(self.oracle, "PriceOracle", "setAssetPrice", asset, price8)
        self.assets[symbol] = asset
        self.decimals[asset] = decimals
        return asset

    async def set_price(self, asset: str, price8: int) -> str:
        """The ``PriceOracle`` mock's price of ``asset`` (USD, 1e8); the transaction hash."""
        return await self.send(OWNER, self.oracle, "PriceOracle", "setAssetPrice", asset, price8)

    # ------------------------------------------------------------------ users

    async def supply(self, asset: str, amount: int, on_behalf: str) -> dict[str, Any]:
        """``on_behalf`` mints ``amount`` of ``asset``, approves the pool and supplies it (enabled
        as collateral by the pool on a first supply); the supply's receipt."""
        return await self._as(on_behalf, [
            ("MintableERC20", asset, "mint", (on_behalf, amount)),
            ("MintableERC20", asset, "approve", (self.pool, MAX_UINT)),
            ("Pool", self.pool, "supply", (asset, amount, on_behalf, 0))])

    async def borrow(self, asset: str, amount: int, on_behalf: str) -> dict[str, Any]:
        """``on_behalf`` borrows ``amount`` of ``asset`` at the variable rate; the receipt."""
        return await self._as(on_behalf, [
            ("Pool", self.pool, "borrow", (asset, amount, VARIABLE, 0, on_behalf))])

    async def repay(self, asset: str, amount: int, on_behalf: str, *, mint: int = 0) -> dict[str, Any]:
        """``on_behalf`` repays ``amount`` (``MAX_UINT``: all) of its variable debt in ``asset``,
        minting ``mint`` more of it first (for the interest); the receipt."""
        steps: list[tuple[str, str, str, tuple[Any, ...]]] = []
        if mint:
            steps.append(("MintableERC20", asset, "mint", (on_behalf, mint)))
        steps += [("MintableERC20", asset, "approve", (self.pool, MAX_UINT)),
                  ("Pool", self.pool, "repay", (asset, amount, VARIABLE, on_behalf))]
        return await self._as(on_behalf, steps)

    async def withdraw(self, asset: str, amount: int, on_behalf: str) -> dict[str, Any]:
        """``on_behalf`` withdraws ``amount`` (``MAX_UINT``: all) of ``asset`` to itself; the receipt."""
        return await self._as(on_behalf, [("Pool", self.pool, "withdraw", (asset, amount, on_behalf))])

    async def account_data(self, user: str) -> tuple[int, ...]:
        """``getUserAccountData``: totalCollateralBase, totalDebtBase, availableBorrowsBase (base
        currency: USD at 1e8), currentLiquidationThreshold, ltv (bps), healthFactor (1e18)."""
        return tuple(int(v) for v in await self.view("Pool", self.pool, "getUserAccountData", user))

    async def liquidate(  # noqa: PLR0917 - liquidationCall's own arguments, in its order
            self, liquidator: str, collateral: str, debt: str, user: str, debt_to_cover: int,
            receive_atoken: bool = False, *, fund: bool = True) -> dict[str, Any]:
        """``liquidator`` (minting ``debt_to_cover`` of ``debt`` first if ``fund``; pass
        ``fund=False`` with ``MAX_UINT``) approves the pool and calls ``liquidationCall``; its
        receipt (``TxFailed`` if it reverted)."""
        steps: list[tuple[str, str, str, tuple[Any, ...]]] = []
        if fund:
            steps.append(("MintableERC20", debt, "mint", (liquidator, debt_to_cover)))
        steps += [("MintableERC20", debt, "approve", (self.pool, MAX_UINT)),
                  ("Pool", self.pool, "liquidationCall",
                   (collateral, debt, user, debt_to_cover, receive_atoken))]
        return await self._as(liquidator, steps)

    async def reserve_tokens(self, asset: str) -> tuple[str, str, str]:
        """The aToken, stable debt token and variable debt token of ``asset`` (the data provider's)."""
        a, s, v = await self.view("AaveProtocolDataProvider", self.data_provider,
                                  "getReserveTokensAddresses", asset)
        return str(a), str(s), str(v)

    async def balance(self, token: str, who: str) -> int:
        return int((await self.view("MintableERC20", token, "balanceOf", who))[0])

    # ------------------------------------------------------------------ internals

    async def _as(self, sender: str, steps: list[tuple[str, str, str, tuple[Any, ...]]]) -> dict[str, Any]:
        """``steps`` (abi, to, fn, args) from ``sender`` in one block (in order); the last one's receipt."""
        if sender != OWNER and sender not in self._impersonated:
            await self.impersonate([sender])
            self._impersonated.add(sender)
        self._steps = []
        async with self.batch() as hashes:
            for abi, to, fn, args in steps:
                await self.send(sender, to, abi, fn, *args)
                self._steps.append((f"{abi}.{fn}", None))
        return (await self._check(hashes))[-1]

    @contextlib.asynccontextmanager
    async def _block(self) -> AsyncIterator[None]:
        """Queue ``_create`` and ``_call`` from ``OWNER``, then mine them; raises ``TxFailed``
        naming the first step that reverted or a contract not where it was predicted."""
        self._nonce = int(await self.rpc.call("eth_getTransactionCount", OWNER, "pending"), 16)
        self._steps = []
        async with self.batch() as hashes:
            yield
        await self._check(hashes)

    def _queued(self) -> list[tuple[str, list[Any]]]:
        if self._batching is None:
            raise RuntimeError("LocalAave: _create/_call outside _block()")
        return self._batching

    def _create(self, name: str, ctor: dict[str, Any] | None = None) -> str:
        """Queue the creation of artifact ``name`` (linked to ``libraries``; constructor arguments
        by name); its future address."""
        art = load("aave-v3")[name]
        code = link(art, self.libraries) if art.link_references else art.bytecode
        code += _ctor_args(art, ctor or {})
        tx = {"from": OWNER, "data": "0x" + code.hex(), "gas": hex(create_gas(code))}
        self._queued().append(("eth_sendTransaction", [tx]))
        address = create_address(OWNER, self._nonce)
        self._nonce += 1
        self._steps.append((f"create {name}", address))
        return address

    def _call(self, to: str, abi: str, fn: str, *args: Any, gas: int = GAS) -> None:
        tx = {"from": OWNER, "to": to, "data": self.abis[abi].call_data(fn, *args), "gas": hex(gas)}
        self._queued().append(("eth_sendTransaction", [tx]))
        self._nonce += 1
        self._steps.append((f"{abi}.{fn}", None))

    async def _check(self, hashes: list[str]) -> list[dict[str, Any]]:
        steps, self._steps = self._steps, []
        receipts = await self.receipts(hashes)
        for (label, address), r in zip(steps, receipts, strict=True):
            if r is None:
                raise TxFailed(f"{label}: not mined")
            if int(r["status"], 16) != 1:
                raise TxFailed(f"{label}: transaction {r['transactionHash']} reverted "
                               f"(gas used {int(r['gasUsed'], 16)})")
            if address is not None and str(r.get("contractAddress") or "").lower() != address:
                raise TxFailed(f"{label}: deployed at {r.get('contractAddress')}, predicted {address}")
        return receipts


def _abi(art: Artifact) -> list[dict[str, Any]]:
    """The artifact's ABI; for MintableERC20 without the ``mint(uint256)`` overload, so that
    ``mint`` is ``mint(address,uint256)`` (``abi.Contract`` keys functions by name)."""
    if art.name != "MintableERC20":
        return art.abi
    return [e for e in art.abi if not (e.get("name") == "mint" and len(e.get("inputs", [])) != 2)]
