"""Aave v3's own bytecode on anvil: the committed artifact subset, library linking, and a pool
deployed from Python that lists three reserves, lends, prices a position below a health factor of
one and liquidates it (the ``LiquidationCall`` event decoded with the pool's ABI)."""

from __future__ import annotations

import hashlib
import time

import pytest

from keeper.chain import artifacts
from keeper.chain.aave_testnet import MAX_UINT, OWNER, LocalAave
from keeper.chain.anvil import REPO_ROOT
from keeper.chain.rpc import Rpc

AAVE_PKG = REPO_ROOT / "node_modules" / "@aave" / "core-v3"
WAD = 10**18
USER = "0x" + "a1" * 20
LENDER = "0x" + "b2" * 20
LIQUIDATOR = "0x" + "c3" * 20

# symbol: decimals, ltv, liquidation threshold, bonus, reserve factor, protocol fee (bps), price (1e8 USD)
RESERVES = {
    "WETH": (18, 8000, 8250, 10500, 1000, 1000, 2_000 * 10**8),
    "WBTC": (8, 7000, 7500, 10650, 2000, 1500, 60_000 * 10**8),
    "USDC": (6, 7700, 8000, 10450, 1000, 500, 1 * 10**8),
}


def percent_mul(value: int, bps: int) -> int:
    """Aave's PercentageMath.percentMul (half up)."""
    return (value * bps + 5000) // 10_000


def percent_div(value: int, bps: int) -> int:
    """Aave's PercentageMath.percentDiv (half up)."""
    return (value * 10_000 + bps // 2) // bps


# ------------------------------------------------------------------ the artifact


def test_aave_artifact_has_the_pool_its_libraries_and_provenance() -> None:
    contracts = artifacts.load("aave-v3")
    assert {"Pool", "PoolConfigurator", "PoolAddressesProvider", "ACLManager", "AToken", "PriceOracle",
            "MintableERC20", "FlashLoanLogic", "BorrowLogic", "ConfiguratorLogic"} <= set(contracts)
    pool = contracts["Pool"]
    assert pool.libraries == ["BorrowLogic", "BridgeLogic", "EModeLogic", "FlashLoanLogic",
                              "LiquidationLogic", "PoolLogic", "SupplyLogic"]
    assert contracts["FlashLoanLogic"].libraries == ["BorrowLogic"]
    assert contracts["PoolConfigurator"].libraries == ["ConfiguratorLogic"]
    assert any(e["type"] == "event" and e["name"] == "LiquidationCall" for e in pool.abi)
    assert contracts["PriceOracle"].bytecode  # no libraries: usable as it is
    assert artifacts.load()["Morpho"].link_references == {}
    prov = artifacts.provenance("aave-v3")
    assert prov["package"]["name"] == "@aave/core-v3"
    assert prov["package"]["version"] == "1.19.3"
    assert prov["package"]["integrity"].startswith("sha512-")
    assert prov["compiler"]["version"].startswith("0.8.10+commit.")
    # one hash per contract's artifact, and Errors.sol's (the revert codes' names)
    assert len(prov["files"]) == len(contracts) + 1
    assert artifacts.error_names("aave-v3")["45"] == "HEALTH_FACTOR_NOT_BELOW_THRESHOLD"


def test_aave_provenance_hashes_match_the_installed_package() -> None:
    if not AAVE_PKG.is_dir():
        pytest.skip(f"{AAVE_PKG} is absent: it is a dev dependency (`make artifacts` installs it)")
    for rel, digest in artifacts.provenance("aave-v3")["files"].items():
        path = AAVE_PKG / rel
        assert path.is_file(), f"{rel} is in the provenance but not in the installed package"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{rel} differs: run `make artifacts`"


def test_link_fills_every_placeholder_and_names_a_missing_library() -> None:
    pool = artifacts.load("aave-v3")["Pool"]
    addresses = {lib: "0x" + f"{i + 1:02x}" * 20 for i, lib in enumerate(pool.libraries)}
    code = artifacts.link(pool, addresses)
    assert b"__$" not in code
    assert len(code) == len(pool.bytecode_hex) // 2 - 1
    for source, libs in pool.link_references.items():
        for lib, refs in libs.items():
            for ref in refs:
                assert code[ref["start"]:ref["start"] + 20].hex() == addresses[lib][2:], (source, lib)
    del addresses["LiquidationLogic"]
    with pytest.raises(artifacts.ArtifactError, match=r"Pool: library LiquidationLogic not linked"):
        artifacts.link(pool, addresses)
    with pytest.raises(artifacts.ArtifactError, match=r"Pool links libraries \(.*FlashLoanLogic"):
        _ = pool.bytecode
    with pytest.raises(artifacts.ArtifactError, match="not a 0x address"):
        artifacts.link(artifacts.load("aave-v3")["FlashLoanLogic"], {"BorrowLogic": "0x1234"})


# ------------------------------------------------------------------ the pool on anvil


async def _deploy(chain: Rpc, capsys: pytest.CaptureFixture[str]) -> tuple[LocalAave, dict[str, str]]:
    before = int(await chain.call("eth_getTransactionCount", OWNER, "latest"), 16)
    t0 = time.perf_counter()
    net = await LocalAave.deploy(chain)
    deployed = time.perf_counter() - t0
    txs = int(await chain.call("eth_getTransactionCount", OWNER, "latest"), 16) - before
    t1 = time.perf_counter()
    assets = {}
    for symbol, (dec, ltv, lt, bonus, rf, fee, price) in RESERVES.items():
        assets[symbol] = await net.add_reserve(symbol, dec, ltv_bps=ltv, threshold_bps=lt, bonus_bps=bonus,
                                               reserve_factor_bps=rf, protocol_fee_bps=fee, price8=price)
    listed = time.perf_counter() - t1
    with capsys.disabled():
        print(f"\nAave v3 deployed in {deployed * 1000:.0f} ms ({txs} transactions); "
              f"3 reserves listed in {listed * 1000:.0f} ms")
    assert deployed < 2.0
    return net, assets


async def test_pool_lends_and_liquidates_a_position_priced_below_one(
        chain: Rpc, capsys: pytest.CaptureFixture[str]) -> None:
    net, assets = await _deploy(chain, capsys)
    weth, wbtc, usdc = assets["WETH"], assets["WBTC"], assets["USDC"]
    assert (await net.view("PoolAddressesProvider", net.provider, "getPool"))[0] == net.pool
    assert (await net.view("PriceOracle", net.oracle, "getAssetPrice", wbtc))[0] == 60_000 * 10**8

    await net.supply(usdc, 1_000_000 * 10**6, LENDER)
    supplied = {weth: 10**18, wbtc: 5 * 10**6}  # 1 WETH (2000 USD), 0.05 WBTC (3000 USD)
    for asset, amount in supplied.items():
        await net.supply(asset, amount, USER)
    borrowed = 3_000 * 10**6
    await net.borrow(usdc, borrowed, USER)

    price = {a: RESERVES[s][6] for s, a in assets.items()}
    unit = {a: 10 ** RESERVES[s][0] for s, a in assets.items()}
    params = {a: RESERVES[s] for s, a in assets.items()}
    value = {a: amount * price[a] // unit[a] for a, amount in supplied.items()}
    total = sum(value.values())
    assert total == 5_000 * 10**8
    avg_ltv = sum(v * params[a][1] for a, v in value.items()) // total
    avg_lt = sum(v * params[a][2] for a, v in value.items()) // total
    debt_base = borrowed * price[usdc] // unit[usdc]
    health = (percent_mul(total, avg_lt) * WAD + debt_base // 2) // debt_base
    got = await net.account_data(USER)
    assert got == (total, debt_base, percent_mul(total, avg_ltv) - debt_base, avg_lt, avg_ltv, health)
    assert got[5] > WAD  # 1.3

    await net.set_price(wbtc, 30_000 * 10**8)  # WBTC halves: (1650 + 1125) / 3000 = 0.925
    unhealthy = (await net.account_data(USER))[5]
    assert unhealthy < WAD

    _, _, debt_token = await net.reserve_tokens(usdc)
    debt = await net.balance(debt_token, USER)
    assert debt >= borrowed
    to_cover = debt // 2
    receipt = await net.liquidate(LIQUIDATOR, weth, usdc, USER, to_cover)
    assert int(receipt["status"], 16) == 1
    topic = net.abis["Pool"].topics["LiquidationCall"]
    logs = [log for log in receipt["logs"]
            if log["address"].lower() == net.pool and log["topics"][0] == topic]
    assert len(logs) == 1
    decoded = net.abis["Pool"].decode_log(logs[0])
    assert decoded is not None
    name, ev = decoded
    assert name == "LiquidationCall"
    # LiquidationLogic: the collateral worth the debt covered, plus the bonus, less the protocol's fee on it
    base = price[usdc] * to_cover * unit[weth] // (price[weth] * unit[usdc])
    with_bonus = percent_mul(base, params[weth][3])
    fee = percent_mul(with_bonus - percent_div(with_bonus, params[weth][3]), params[weth][5])
    assert ev == {"collateralAsset": weth, "debtAsset": usdc, "user": USER.lower(), "debtToCover": to_cover,
                  "liquidatedCollateralAmount": with_bonus - fee, "liquidator": LIQUIDATOR.lower(),
                  "receiveAToken": 0}
    assert await net.balance(weth, LIQUIDATOR) == with_bonus - fee
    a_weth, _, _ = await net.reserve_tokens(weth)
    assert await net.balance(a_weth, net.treasury) == fee
    assert (await net.account_data(USER))[5] > unhealthy  # half the debt and a bit less collateral


async def test_repay_and_withdraw_close_the_position(chain: Rpc, capsys: pytest.CaptureFixture[str]) -> None:
    net, assets = await _deploy(chain, capsys)
    usdc, weth = assets["USDC"], assets["WETH"]
    await net.supply(usdc, 10_000 * 10**6, LENDER)
    await net.supply(weth, 10**18, USER)
    await net.borrow(usdc, 500 * 10**6, USER)
    assert (await net.account_data(USER))[1] == 500 * 10**8
    await net.repay(usdc, MAX_UINT, USER, mint=10**6)  # a unit of USDC more for the interest
    await net.withdraw(weth, MAX_UINT, USER)
    assert await net.account_data(USER) == (0, 0, 0, 0, 0, MAX_UINT)
    assert await net.balance(weth, USER) == 10**18
