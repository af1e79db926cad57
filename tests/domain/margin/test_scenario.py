"""`keeper health`: the scenario reader's errors name the field; the command never prints half
a result; the table and the JSON agree."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from keeper.app import cli
from keeper.app.scenario import load_scenario
from keeper.errors import ScenarioError

BASE: dict[str, Any] = {
    "id": "t",
    "profile": "dydx-v4",
    "markets": {"ETH-USD": {"price": "3000", "mmf": "0.05"}},
    "assets": {"USDC": {"price": "1"}},
    "account": {
        "cross": {
            "balances": {"USDC": "1000"},
            "positions": [{"market": "ETH-USD", "size": "-1.5", "entry_price": "3000"}],
        },
        "isolated": [
            {
                "id": "iso",
                "balances": {"USDC": "10"},
                "positions": [{"market": "ETH-USD", "size": "1", "quote": "-2995"}],
            }
        ],
    },
}


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: Any, *flags: str) -> tuple[int, str, str]:
    f = tmp_path / "s.json"
    f.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    code = cli.main(["health", *flags, str(f)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_valid_scenario_prints_json_for_every_bucket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(tmp_path, capsys, BASE, "--json")
    assert code == 0
    res = json.loads(out)
    assert set(res) == {"cross", "isolated"}
    assert res["cross"]["liquidatable"] is False
    iso = res["isolated"]["iso"]
    assert iso["equity"] == "15"
    assert iso["liquidatable"] is True
    assert iso["liquidation"]["action"] == "close_position"
    assert iso["liquidation"]["market"] == "ETH-USD"


def test_table_output_names_buckets_and_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(tmp_path, capsys, BASE)
    assert code == 0
    assert "[cross]" in out
    assert "[isolated iso]" in out
    assert "liquidation price ETH-USD" in out
    assert "rule: dydx-v4:" in out


def _mutate(path: list[Any], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    node: Any = doc
    for k in path[:-1]:
        node = node[k]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


MALFORMED = [
    ("bad json", '{"profile": "dydx-v4", ', "bad JSON"),
    ("float price", None, "markets.ETH-USD.price: a JSON float (3000.5)"),
    (
        "float size",
        _mutate(["account", "cross", "positions", 0, "size"], 1.5),
        "account.cross.positions[0].size: a JSON float",
    ),
    ("int balance", _mutate(["account", "cross", "balances", "USDC"], 1000), "account.cross.balances.USDC"),
    (
        "unknown market",
        _mutate(["account", "isolated", 0, "positions", 0, "market"], "BTC-USD"),
        "account.isolated[0].positions[0].market: unknown market 'BTC-USD'",
    ),
    (
        "unknown asset",
        _mutate(["account", "cross", "balances"], {"USDT": "5"}),
        "account.cross.balances.USDT: unknown asset",
    ),
    ("unknown profile", _mutate(["profile"], "ftx"), "profile: unknown profile 'ftx'"),
    (
        "missing market price",
        _mutate(["markets", "ETH-USD", "price"], KeyError),
        "markets.ETH-USD.price: missing price",
    ),
    (
        "missing asset price",
        _mutate(["assets", "USDC", "price"], KeyError),
        "assets.USDC.price: missing price",
    ),
    ("no schedule", _mutate(["markets", "ETH-USD", "mmf"], KeyError), "markets.ETH-USD: needs one of mmf"),
    (
        "not a number",
        _mutate(["markets", "ETH-USD", "mmf"], "five"),
        "markets.ETH-USD.mmf: 'five' is not a decimal",
    ),
    ("NaN", _mutate(["assets", "USDC", "price"], "NaN"), "assets.USDC.price"),
    ("unknown field", _mutate(["markets", "ETH-USD", "mmr"], "0.05"), "markets.ETH-USD.mmr: unknown field"),
    ("zero price", _mutate(["markets", "ETH-USD", "price"], "0"), "markets.ETH-USD.price: must be > 0"),
    (
        "positions under a lending profile",
        _mutate(["profile"], "aave-v3.3"),
        "account.cross.positions: profile",
    ),
    ("duplicate bucket", _mutate(["account", "isolated", 0, "id"], "cross"), "account.isolated[0].id"),
]


@pytest.mark.parametrize(("name", "doc", "needle"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_scenario_exits_nonzero_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, doc: Any, needle: str
) -> None:
    if doc is None:  # a float literal cannot be produced by json.dumps of a Decimal string
        doc = json.dumps(BASE).replace('"price": "3000"', '"price": 3000.5')
    code, out, err = _run(tmp_path, capsys, doc, "--json")
    assert code != 0
    assert out == ""  # never half a result
    assert needle in err, err


def test_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["health", "--json", str(tmp_path / "absent.json")])
    out = capsys.readouterr()
    assert code == 1
    assert out.out == ""
    assert "cannot read" in out.err


def test_liquidation_request_is_bounded_by_the_close_factor() -> None:
    doc = {
        "profile": "aave-v3.0",
        "markets": {},
        "assets": {
            "COLL": {
                "price": "1",
                "decimals": 18,
                "liquidation_threshold": "0.5",
                "liquidation_bonus": "0.01",
            },
            "BRRW": {"price": "1", "decimals": 18},
        },
        "account": {"cross": {"balances": {"COLL": "1000", "BRRW": "-501.853426710065837121"}}},
        "liquidation_request": {"repay_asset": "BRRW", "seize_asset": "COLL", "amount": "300"},
    }
    sc = load_scenario(json.dumps(doc))
    assert sc.request is not None
    assert sc.request.amount == 300
    bad = copy.deepcopy(doc)
    bad["liquidation_request"]["amount"] = 300.0
    with pytest.raises(ScenarioError, match=r"liquidation_request.amount: a JSON float"):
        load_scenario(json.dumps(bad))
    bad["liquidation_request"] = {"repay_asset": "DAI", "seize_asset": "COLL", "amount": "1"}
    with pytest.raises(ScenarioError, match=r"liquidation_request.repay_asset"):
        load_scenario(json.dumps(bad))


MORPHO_EDGE: dict[str, Any] = {
    "id": "morpho-unit-window",
    "source": "the chain venue issue's example: Morpho Blue's contract finds it liquidatable "
              "(maxBorrow 13.884651 < borrowed 13.884652), the exact product a hair over 1",
    "profile": "morpho-blue",
    "assets": {
        "WCOLL": {"price": "0.006679607595726462464273", "decimals": 18, "liquidation_threshold": "0.965"},
        "LOAN": {"price": "1", "decimals": 6},
    },
    "account": {"isolated": [{"id": "market", "balances": {"WCOLL": "2154.054762834647990724",
                                                           "LOAN": "-13.884652"}}]},
}


def test_morpho_is_judged_in_the_contracts_units_down_to_one_loan_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(tmp_path, capsys, MORPHO_EDGE, "--json")
    assert code == 0
    market = json.loads(out)["isolated"]["market"]
    assert market["liquidatable"] is True
    assert market["collateral_value"] == "13.884651"  # maxBorrow, in the loan token
    seize = market["liquidation"]["seize"]["amount"]
    assert 0 < float(seize) < 2154.06


def test_morpho_honours_a_liquidation_request_as_repaid_shares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = copy.deepcopy(MORPHO_EDGE)
    doc["liquidation_request"] = {"repay_asset": "LOAN", "seize_asset": "WCOLL", "amount": "5"}
    code, out, _ = _run(tmp_path, capsys, doc, "--json")
    assert code == 0
    liq = json.loads(out)["isolated"]["market"]["liquidation"]
    # 5 LOAN requested: repaid as toSharesDown(5e6) shares, which toAssetsUp values at 5 LOAN
    assert liq["repay"]["amount"] == "5"
    # Morpho.liquidate by shares: seized = mulDivDown(wMulDown(toAssetsDown(shares), LIF), 1e36, price),
    # LIF = WAD.wDivDown(WAD - 0.3e18.wMulDown(WAD - lltv)), in the contract's integers
    wad = 10**18
    lif = wad * wad // (wad - 3 * 10**17 * (wad - 965 * 10**15) // wad)
    price = 6679607595726462464273  # 0.006679607595726462464273 loan per collateral, 1e36 scale
    seized = (5 * 10**6 * lif // wad) * 10**36 // price
    assert liq["seize"]["amount"] == str(Decimal(seized).scaleb(-18))
