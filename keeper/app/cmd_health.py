"""`keeper health FILE [--json]`: a scenario's buckets, their health, liquidation and
bankruptcy prices and the liquidation the keeper would submit.

The whole result is computed before anything is printed: a malformed scenario or a failing
computation exits non-zero with a message naming the field, never with half a result. A file
larger than ``keeper.jsonlimits.MAX_DOCUMENT_BYTES`` or nested deeper than ``MAX_DEPTH`` is
refused in one line naming the file and the limit (it is never read whole, never parsed).
"""

from __future__ import annotations

import argparse
import decimal
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from keeper.app.scenario import Scenario, load_scenario
from keeper.domain.margin import (
    bankruptcy_price,
    evaluate,
    liquidation_price,
    plan_liquidation,
    weighted_health,
)
from keeper.domain.margin.types import CONTEXT
from keeper.domain.model import Bucket
from keeper.errors import KeeperError, ScenarioError
from keeper.jsonlimits import MAX_DOCUMENT_BYTES, problem, read_capped

__all__ = ["HELP", "add_arguments", "bucket_result", "compute", "num", "run"]

HELP = "evaluate a what-if scenario: bucket health, liquidation prices, the liquidation to submit"

# No log line here: stdout is the result (JSON for --json) and the checker parses all of it.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="scenario JSON file (format: ../shared/vectors/SCENARIO.md)")
    parser.add_argument("--json", action="store_true", help="print the JSON result object")


def num(d: Decimal | None) -> str | None:
    """A decimal string without exponent or trailing zeros; ``inf`` for infinity."""
    if d is None:
        return None
    if d.is_infinite():
        return "inf" if d > 0 else "-inf"
    with decimal.localcontext(CONTEXT):
        return format(d.normalize(), "f")


def bucket_result(sc: Scenario, bucket: Bucket) -> dict[str, Any]:
    """The SCENARIO.md result object of one bucket."""
    pricing = sc.pricing
    h = evaluate(pricing, bucket)
    out: dict[str, Any] = {}
    if h.lending:
        out["collateral_value"] = num(h.equity)
        out["debt_value"] = num(h.requirement)
    else:
        out["equity"] = num(h.equity)
        out["maintenance_requirement"] = num(h.requirement)
    out["health_factor"] = num(h.health_factor)
    venue_health = weighted_health(pricing, bucket)
    if venue_health is not None:  # MarginFi, Vertex: the venue's own health numbers
        out["health"] = {k: num(v) for k, v in venue_health.items()}
    out["liquidatable"] = h.liquidatable
    out["bankrupt"] = h.bankrupt
    liq: dict[str, str | None] = {}
    bkr: dict[str, str | None] = {}
    for m in sorted(bucket.positions):
        liq[m] = num(liquidation_price(pricing, bucket, m))
        bkr[m] = num(bankruptcy_price(pricing, bucket, m))
    out["liquidation_price"] = liq
    out["bankruptcy_price"] = bkr
    plan = plan_liquidation(pricing, bucket, sc.request) if h.liquidatable else None
    if plan is not None:
        lq: dict[str, Any] = {"action": plan.action, "rule": plan.rule}
        if plan.market is not None:
            lq["market"] = plan.market
            lq["size"] = num(plan.size)
        if plan.close_factor is not None:
            lq["close_factor"] = num(plan.close_factor)
        if plan.repay_asset is not None:
            lq["repay"] = {"asset": plan.repay_asset, "amount": num(plan.repay_amount)}
        if plan.seize_asset is not None:
            lq["seize"] = {"asset": plan.seize_asset, "amount": num(plan.seize_amount)}
        if plan.protocol_fee is not None:
            lq["protocol_fee"] = num(plan.protocol_fee)
        if plan.bonus is not None:
            lq["bonus"] = num(plan.bonus)
        if plan.fee is not None:
            lq["fee"] = {"asset": plan.fee_asset, "amount": num(plan.fee)}
        if plan.price is not None:
            lq["price"] = num(plan.price)
        if plan.maintenance_health_after is not None:
            lq["maintenance_health_after"] = num(plan.maintenance_health_after)
        lq["notional"] = num(plan.notional)
        lq["health_after"] = num(plan.health_after)
        out["liquidation"] = lq
    return out


def compute(sc: Scenario) -> dict[str, Any]:
    """The whole result object (``cross`` and/or ``isolated``)."""
    result: dict[str, Any] = {}
    try:
        if sc.cross is not None:
            result["cross"] = bucket_result(sc, sc.cross)
        if sc.isolated:
            result["isolated"] = {b.name: bucket_result(sc, b) for b in sc.isolated}
    except KeeperError as exc:
        raise ScenarioError(str(exc)) from exc
    except (decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow) as exc:
        raise ScenarioError(f"arithmetic failed on this scenario: {exc!r}") from exc
    return result


def _table(sc: Scenario, result: dict[str, Any]) -> str:
    lines = [f"scenario {sc.id or '(no id)'} · profile {sc.profile.name}"]
    rows: list[tuple[str, dict[str, Any]]] = []
    if "cross" in result:
        rows.append(("cross", result["cross"]))
    rows.extend((f"isolated {k}", v) for k, v in result.get("isolated", {}).items())
    for name, r in rows:
        lines.append("")
        lines.append(f"[{name}]")
        lending = "collateral_value" in r
        pairs = (
            [("collateral value (weighted)", r.get("collateral_value")), ("debt value", r.get("debt_value"))]
            if lending
            else [("equity", r.get("equity")), ("maintenance requirement", r.get("maintenance_requirement"))]
        )
        pairs += [
            ("health factor", r["health_factor"]),
            ("liquidatable", "yes" if r["liquidatable"] else "no"),
            ("bankrupt", "yes" if r["bankrupt"] else "no"),
        ]
        pairs += [(f"{k} health", v) for k, v in r.get("health", {}).items()]
        for m, p in r["liquidation_price"].items():
            pairs.append((f"liquidation price {m}", p if p is not None else "-"))
            bp = r["bankruptcy_price"].get(m)
            pairs.append((f"bankruptcy price {m}", bp if bp is not None else "-"))
        width = max(len(k) for k, _ in pairs)
        lines.extend(f"  {k.ljust(width)}  {v}" for k, v in pairs)
        lq = r.get("liquidation")
        if lq is not None:
            lines.append(f"  liquidation: {lq['action']}")
            lines.append(f"    rule: {lq['rule']}")
            if "market" in lq:
                lines.append(f"    close {lq['size']} of {lq['market']} (notional {lq['notional']})")
            if "repay" in lq:
                lines.append(f"    repay {lq['repay']['amount']} {lq['repay']['asset']}")
            if "seize" in lq:
                fee = lq.get("protocol_fee")
                lines.append(f"    seize {lq['seize']['amount']} {lq['seize']['asset']} (protocol fee {fee})")
            if "fee" in lq:
                lines.append(f"    fee {lq['fee']['amount']} {lq['fee']['asset']}")
            lines.append(f"    health after: {lq['health_after'] if lq['health_after'] is not None else '-'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        text = read_capped(path, MAX_DOCUMENT_BYTES)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    why = problem(text, max_bytes=MAX_DOCUMENT_BYTES)
    if why is not None:
        raise ScenarioError(f"{path}: {why}")
    try:
        sc = load_scenario(text)
        result = compute(sc)
    except ScenarioError as exc:  # which file, then which field
        raise ScenarioError(f"{path}: {exc}") from None
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        sys.stdout.write(_table(sc, result) + "\n")
    return 0
