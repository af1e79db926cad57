"""``keeper demo --venue chain``: Morpho Blue (isolated) and Aave v3 (cross) on their own bytecode,
the same borrowers on both, a recorded crash played block by block, both daemons liquidating live.

The summary's numbers come from the chain's own events and state; each protocol's run is sound
(every liquidation on chain is a recorded outcome, every intent has one) and its log replays to
the same decisions (0 divergences).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from keeper.chain.demo import ChainDemoOptions, run_chain_demo

KEEPER = str(Path(sys.executable).parent / "keeper")


@pytest.mark.slow
async def test_the_chain_demo_liquidates_on_both_protocols_soundly(data_dir: Path) -> None:
    opts = ChainDemoOptions(accounts=40, start="2025-10-10T20:30:00Z", end="2025-10-10T22:00:00Z",
                            shared_data=data_dir)
    s = await run_chain_demo(opts)
    assert "bybit 5m bars" in s.prices and s.blocks > 50
    morpho, aave = s.protocols
    for p in (morpho, aave):
        assert p.sound, p
        assert p.divergences == 0
        assert p.liquidations > 0 and p.collateral_seized_usd > p.debt_repaid_usd > 0  # the bonus
        assert p.gas_used > 0 and p.block_to_intent_p50_ms is not None
    # isolated: each market is liquidated on its own, so one borrower can be liquidated in one of
    # its markets while its other collateral would have covered it under one health factor
    assert morpho.accounts_liquidated >= aave.accounts_liquidated


def test_the_chain_demo_command_prints_both_protocols_and_writes_json(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "summary.json"
    run = subprocess.run(  # its own process: the command configures logging for itself
        [KEEPER, "demo", "--venue", "chain", "--accounts", "12", "--start", "2025-10-10T21:00:00Z",
         "--end", "2025-10-10T21:45:00Z", "--shared-data", str(data_dir), "--summary-json", str(out)],
        capture_output=True, text=True, timeout=170, check=False)
    text = run.stdout
    assert run.returncode == 0, text + run.stderr[-2000:]
    assert "morpho-blue (isolated)" in text and "aave-v3.0 (cross)" in text and "sound" in text
    summary = json.loads(out.read_text())
    assert summary["sound"] is True
    assert [p["protocol"] for p in summary["protocols"]] == ["morpho-blue (isolated)", "aave-v3.0 (cross)"]


@pytest.mark.slow
async def test_keeper_compare_reads_the_same_figures_from_the_exported_chain_logs(
        data_dir: Path, tmp_path: Path) -> None:
    opts = ChainDemoOptions(accounts=30, start="2025-10-10T20:45:00Z", end="2025-10-10T22:00:00Z",
                            shared_data=data_dir, export=tmp_path)
    live = await run_chain_demo(opts)
    run = subprocess.run([KEEPER, "compare", "--chain-log", str(tmp_path / "morpho-blue.ndjson"),
                          "--chain-log", str(tmp_path / "aave-v3.0.ndjson")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    for p in live.protocols:  # the chain's own figures, read back from the logs alone
        assert p.protocol in run.stdout
    lines = {ln.split("  ")[0]: ln for ln in run.stdout.splitlines()}
    row = lines["liquidations on chain"].split()
    assert [int(row[-2]), int(row[-1])] == [p.liquidations for p in live.protocols]
    repaid = lines["debt repaid (USD)"].replace(",", "").split()
    want = [p.debt_repaid_usd for p in live.protocols]
    assert [float(repaid[-2]), float(repaid[-1])] == pytest.approx(want, abs=0.01)
