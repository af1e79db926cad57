"""A scenario's ``liquidation_request`` (SCENARIO.md) is honoured by every lending profile: the
requested repayment, bounded only by the venue's own rule (close factor, the debt, the
collateral), priced with the venue's bonus; a perp profile refuses it (it repays no debt)."""

from __future__ import annotations

import json
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest

from keeper.app.cmd_health import compute
from keeper.app.scenario import load_scenario
from keeper.errors import ScenarioError

D = Decimal
BONUS = D("0.05")


def _doc(profile: str, amount: str, balances: dict[str, str] | None = None) -> dict[str, Any]:
    asset = {"decimals": 6, "liquidation_threshold": "0.8", "liquidation_bonus": str(BONUS),
             "asset_weight": "0.8", "liability_weight": "1"}
    return {
        "profile": profile,
        "assets": {"COLL": {"price": "2", **asset}, "COL2": {"price": "1", **asset},
                   "BRRW": {"price": "1", **asset}},
        "account": {"cross": {"balances": balances or {"COLL": "500", "BRRW": "-850"}}},
        "liquidation_request": {"repay_asset": "BRRW", "seize_asset": "COLL", "amount": amount},
    }


def _liq(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = compute(load_scenario(json.dumps(doc)))["cross"]["liquidation"]
    return out


def _seize(repay: Decimal, lif: Decimal) -> Decimal:
    """COLL seized for ``repay`` BRRW (BRRW at 1, COLL at 2), in COLL's units, rounded down."""
    return (repay * lif / 2).quantize(D("0.000001"), rounding=ROUND_DOWN)


@pytest.mark.parametrize("profile", ["aave-v3.0", "compound-v2", "morpho-blue"])
def test_a_small_request_is_repaid_as_asked_and_priced_with_the_venues_bonus(profile: str) -> None:
    liq = _liq(_doc(profile, "100"))
    assert liq["repay"] == {"asset": "BRRW", "amount": "100"}
    assert liq["seize"]["asset"] == "COLL"
    if profile == "morpho-blue":  # LIF = min(1.15, 1 / (0.3 * lltv + 0.7)) in the contract's integers
        assert D(liq["seize"]["amount"]) == pytest.approx(D(100) / (D("0.3") * D("0.8") + D("0.7")) / 2,
                                                          abs=D("0.000002"))
    else:
        assert D(liq["seize"]["amount"]) == _seize(D(100), 1 + BONUS)


@pytest.mark.parametrize(("profile", "bound"), [("aave-v3.0", D(850)), ("compound-v2", D(425))])
def test_a_request_past_the_close_factor_is_cut_to_it(profile: str, bound: Decimal) -> None:
    liq = _liq(_doc(profile, "100000"))
    assert D(liq["repay"]["amount"]) == bound  # aave: HF <= 0.95 closes 100%; compound-v2: 50%


def test_morpho_repays_more_than_restores_health_when_asked_bounded_only_by_the_debt() -> None:
    # two collaterals: not one Morpho position, the generic Morpho rule (no close factor)
    bal = {"COLL": "440", "COL2": "100", "BRRW": "-800"}  # HF (880 + 100) * 0.8 / 800 < 1
    own = compute(load_scenario(json.dumps({**_doc("morpho-blue", "1", bal),
                                            "liquidation_request": None})))["cross"]["liquidation"]
    least = D(own["repay"]["amount"])
    assert least < 500, own  # the keeper's own choice: the least that restores health
    liq = _liq(_doc("morpho-blue", "500", bal))
    assert D(liq["repay"]["amount"]) == 500, liq["rule"]  # not cut to the keeper's own choice
    assert "requested" in liq["rule"]
    liq = _liq(_doc("morpho-blue", "100000", bal))
    assert D(liq["repay"]["amount"]) == 800  # bounded by the debt (the collateral covers it)
    liq = _liq(_doc("morpho-blue", "100000", {"COLL": "400", "COL2": "100", "BRRW": "-790"}))
    assert D(liq["seize"]["amount"]) == 400  # bounded by the collateral it names
    assert D(liq["repay"]["amount"]) < 790


def test_compound_v3_absorbs_the_whole_account_and_says_the_request_does_not_apply() -> None:
    liq = _liq(_doc("compound-v3", "100"))
    assert liq["repay"]["amount"] == "850"
    assert "request's amount does not apply" in liq["rule"]


@pytest.mark.parametrize("profile", ["generic-perp", "binance-usdm", "drift-v2", "hyperliquid"])
def test_a_perp_profile_refuses_a_request_naming_why(profile: str) -> None:
    doc = _doc(profile, "100")
    doc["markets"] = {"ETH-USD": {"price": "3000", "mmf": "0.05"}}
    doc["account"] = {"cross": {"balances": {"BRRW": "100"},
                                "positions": [{"market": "ETH-USD", "size": "1", "entry_price": "3000"}]}}
    with pytest.raises(ScenarioError, match=r"liquidation_request: profile .* repays no debt"):
        load_scenario(json.dumps(doc))
