"""The status page renders in headless Chromium: the JS runs, polls the views and fills the
at-risk table. Leaves a screenshot at ``artifacts/status-page.png`` (gitignored)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from keeper.app.admin import AdminServer, build_admin_app
from tests.app.fakes import AT_RISK, FEEDS, LIQUIDATIONS, FakeProvider

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_TIMEOUT_S = 60


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        for candidate in (f"/usr/bin/{name}", shutil.which(name)):
            if candidate and Path(candidate).exists():
                return candidate
    pytest.skip("no chromium or chromium-browser on this machine: run `make browser` "
                "(scripts/ensure-system.sh chromium) to test the status page in a browser")


async def run_chromium(binary: str, profile: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=3000",
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CHROMIUM_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"chromium did not finish within {CHROMIUM_TIMEOUT_S}s")
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def test_status_page_renders_the_at_risk_table_in_headless_chromium(tmp_path):
    binary = find_chromium()
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "status-page.png"
    shot.unlink(missing_ok=True)
    app = build_admin_app(FakeProvider(), None)
    async with AdminServer(app, "127.0.0.1", 0) as server:
        url = f"{server.url}/"
        rc, dom, err = await run_chromium(binary, tmp_path / "profile", "--dump-dom", url)
        assert rc == 0, f"chromium failed: {err[-2000:]}"
        rc2, _, err2 = await run_chromium(binary, tmp_path / "profile2", f"--screenshot={shot}",
                                          "--window-size=1280,800", url)
        assert rc2 == 0, f"chromium screenshot failed: {err2[-2000:]}"

    # the static HTML has only "loading…" rows: these come from the JS having fetched the views
    assert "loading…" not in dom
    assert 'class="status ok"' in dom, "the page reports an error polling the views"
    for row in AT_RISK:
        assert f'data-key="{row["account"]}"' in dom
        assert f"<td>{row['bucket']}</td>" in dom
    assert '<tr data-key="acct-7731" class="bad">' in dom  # liquidatable rows are flagged
    assert LIQUIDATIONS[0]["intent_id"] in dom
    for feed in FEEDS:
        assert f'data-key="{feed["symbol"]}"' in dom
    # rows appear in the order the provider gave (health ascending)
    positions = [dom.index(f'data-key="{r["account"]}"') for r in AT_RISK]
    assert positions == sorted(positions)
    assert shot.exists() and shot.stat().st_size > 5000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
