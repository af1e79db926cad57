"""MarginFi v2, Vertex and Aevo scenarios (``tests/domain/margin/scenarios``) through the real command and
the shared checker; the scenario format's extensions for them refused, naming the field, when
malformed or given to a profile that does not read them."""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from keeper.app import cli
from keeper.app.scenario import load_scenario
from keeper.errors import ScenarioError

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = Path(__file__).with_name("scenarios")
PROFILES = ("marginfi-v2", "vertex", "aevo")


def _scenarios() -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(SCENARIOS.glob("*.json"))]


def test_each_venue_has_at_least_five_scenarios_with_a_source() -> None:
    by_profile: dict[str, list[str]] = {p: [] for p in PROFILES}
    for doc in _scenarios():
        by_profile[doc["profile"]].append(doc["id"])
        assert len(doc["source"]) > 80, doc["id"]
        published = doc["id"].split("-")[1] in {"guide", "test", "docs"}
        assert published or "derived" in doc["source"].lower(), doc["id"]  # says it is derived
    for profile, ids in by_profile.items():
        assert len(ids) >= 5, (profile, ids)


def test_venue_scenarios_all_pass_through_keeper_health(vectors_dir: Path) -> None:
    n = len(_scenarios())
    cmd = f"{shlex.quote(sys.executable)} -m keeper.app.cli health --json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(vectors_dir / "check_scenarios.py"), "--cmd", cmd, str(SCENARIOS)],
        capture_output=True, text=True, timeout=240, cwd=ROOT, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"{n} passed, 0 failed"


def _doc(name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((SCENARIOS / f"{name}.json").read_text(encoding="utf-8"))
    return out


def _set(doc: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node: Any = doc
    for k in path[:-1]:
        node = node[k]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


MRGN = "marginfi-test-liquidate-conf"
SPREAD = "vertex-derived-long-spread"
OPTION = "aevo-docs-option-liquidation-fee"

MALFORMED: list[tuple[str, str, list[Any], Any, str]] = [
    ("negative conf", MRGN, ["assets", "A", "conf"], "-0.1", "assets.A.conf: must be >= 0"),
    ("conf not a decimal", MRGN, ["assets", "A", "conf"], "wide", "assets.A.conf: 'wide' is not a decimal"),
    ("conf as a JSON number", MRGN, ["assets", "A", "conf"], 1, "assets.A.conf: expected a decimal string"),
    ("conf under another profile", MRGN, ["profile"], "aave-v3.3",
     "assets.A.conf: profile 'aave-v3.3' does not read it"),
    ("one initial weight", MRGN, ["assets", "A", "liability_weight_init"], KeyError,
     "assets.A.liability_weight_init: missing"),
    ("negative initial weight", MRGN, ["assets", "A", "asset_weight_init"], "-1",
     "assets.A.asset_weight_init: must be >= 0"),
    ("seize_amount with amount", MRGN, ["liquidation_request", "amount"], "1",
     "liquidation_request.seize_amount: give amount or seize_amount, not both"),
    ("seize_amount zero", MRGN, ["liquidation_request", "seize_amount"], "0",
     "liquidation_request.seize_amount: must be > 0"),
    ("spread with an unknown asset", SPREAD, ["markets", "BTC-PERP", "spread_asset"], "WBTC",
     "markets.BTC-PERP.spread_asset: unknown asset 'WBTC'"),
    ("spread asset not a name", SPREAD, ["markets", "BTC-PERP", "spread_asset"], 7,
     "markets.BTC-PERP.spread_asset: expected an asset name"),
    ("spread under another profile", SPREAD, ["profile"], "dydx-v4",
     "markets.BTC-PERP.spread_asset: profile 'dydx-v4' does not read it"),
    ("perp weight not a decimal", SPREAD, ["markets", "BTC-PERP", "long_weight"], "heavy",
     "markets.BTC-PERP.long_weight: 'heavy' is not a decimal"),
    ("option type", OPTION, ["markets", "ETH-30DEC22-1500-C", "option", "type"], "straddle",
     "markets.ETH-30DEC22-1500-C.option.type: expected 'call' or 'put'"),
    ("option underlying unpriced", OPTION, ["markets", "ETH-30DEC22-1500-C", "option", "underlying"], "BTC",
     "markets.ETH-30DEC22-1500-C.option.underlying: no price for 'BTC'"),
    ("option unknown key", OPTION, ["markets", "ETH-30DEC22-1500-C", "option", "strike"], "1500",
     "markets.ETH-30DEC22-1500-C.option.strike: unknown field"),
    ("option not an object", OPTION, ["markets", "ETH-30DEC22-1500-C", "option"], "call",
     "markets.ETH-30DEC22-1500-C.option: expected an object"),
    ("option under another profile", OPTION, ["profile"], "hyperliquid",
     "markets.ETH-30DEC22-1500-C.option: profile 'hyperliquid' does not read it"),
]


@pytest.mark.parametrize(("name", "base", "path", "value", "needle"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_malformed_venue_field_is_refused_naming_it(
    name: str, base: str, path: list[Any], value: Any, needle: str
) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(json.dumps(_set(_doc(base), path, value)))
    assert needle in str(info.value), str(info.value)


def test_seize_amount_is_refused_by_a_profile_that_takes_no_collateral_amount() -> None:
    doc = _set(_doc(MRGN), ["profile"], "aave-v3.3")
    for sym in ("A", "USDC"):
        doc["assets"][sym].pop("conf")
        doc["assets"][sym].pop("asset_weight_init")
        doc["assets"][sym].pop("liability_weight_init")
    with pytest.raises(ScenarioError, match=r"liquidation_request.seize_amount: profile 'aave-v3.3'"):
        load_scenario(json.dumps(doc))


def test_a_spot_asset_is_paired_with_one_perp_only() -> None:
    doc = _doc(SPREAD)
    doc["markets"]["BTC-PERP2"] = dict(doc["markets"]["BTC-PERP"])
    with pytest.raises(ScenarioError, match=r"markets.BTC-PERP2.spread_asset: 'BTC' is already paired"):
        load_scenario(json.dumps(doc))


def test_a_refused_oracle_price_exits_naming_the_symbol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 5 * 2.12 = 10.6 > 10% of 100: MarginFi refuses the price (OracleMaxConfidenceExceeded)
    doc = _set(_doc(MRGN), ["assets", "A"], {"price": "100", "conf": "5", "asset_weight": "0.1"})
    f = tmp_path / "s.json"
    f.write_text(json.dumps(doc), encoding="utf-8")
    code = cli.main(["health", "--json", str(f)])
    out = capsys.readouterr()
    assert code != 0
    assert out.out == ""
    assert "A: confidence 5 x 2.12 = 10.6" in out.err
    assert "OracleMaxConfidenceExceeded" in out.err


def test_the_table_shows_the_venue_health_and_the_fee(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "s.json"
    f.write_text(json.dumps(_doc(MRGN)), encoding="utf-8")
    assert cli.main(["health", str(f)]) == 0
    out = capsys.readouterr().out
    assert any(line.split() == ["maintenance", "health", "-3.19946"] for line in out.splitlines())
    assert "    fee 0.0479240109674892283" in out
