"""The status page renders in headless Chromium: the JS runs, polls the views and fills the
at-risk table. Leaves a screenshot at ``artifacts/status-page.png`` (gitignored)."""

from __future__ import annotations

import asyncio
import html
import re
import shutil
from decimal import Decimal
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


async def _page(tmp_path: Path, provider: FakeProvider, shot: Path | None = None) -> str:
    binary = find_chromium()
    app = build_admin_app(provider, None)
    async with AdminServer(app, "127.0.0.1", 0) as server:
        url = f"{server.url}/"
        rc, dom, err = await run_chromium(binary, tmp_path / "profile", "--dump-dom", url)
        assert rc == 0, f"chromium failed: {err[-2000:]}"
        if shot is not None:
            rc2, _, err2 = await run_chromium(binary, tmp_path / "profile2", f"--screenshot={shot}",
                                              "--window-size=1280,800", url)
            assert rc2 == 0, f"chromium screenshot failed: {err2[-2000:]}"
    return dom


def _text(dom: str, element_id: str) -> str:
    """The text of the element with ``id`` (no markup inside it on this page)."""
    m = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert m is not None, f"no #{element_id} in the page"
    return html.unescape(m.group(1))


async def test_status_page_renders_the_at_risk_table_in_headless_chromium(tmp_path: Path) -> None:
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "status-page.png"
    shot.unlink(missing_ok=True)
    dom = await _page(tmp_path, FakeProvider(), shot)

    # the static HTML has only "loading…" rows: these come from the JS having fetched the views
    assert "loading…" not in dom
    assert "page updated" in _text(dom, "page"), "the page reports an error polling the views"
    for row in AT_RISK:
        assert f'data-key="{row["account"]}/{row["bucket"]}"' in dom
        assert f"<td>{row['bucket']}</td>" in dom
    assert '<tr data-key="acct-7731/cross" class="bad">' in dom  # liquidatable rows are flagged
    assert LIQUIDATIONS[0]["account"] in dom
    for feed in FEEDS:
        assert f'data-key="{feed["symbol"]}"' in dom
    # rows appear in the order the provider gave (health ascending)
    positions = [dom.index(f'data-key="{r["account"]}/{r["bucket"]}"') for r in AT_RISK]
    assert positions == sorted(positions)
    assert shot.exists() and shot.stat().st_size > 5000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_the_page_leads_with_mode_and_readiness_and_rounds_for_people(tmp_path: Path) -> None:
    provider = FakeProvider()
    provider.is_ready = False
    dom = await _page(tmp_path, provider)
    assert _text(dom, "mode").startswith("PAPER")  # the daemon's mode, not the page's polling state
    assert _text(dom, "ready") == "NOT READY"
    assert "stale prices: ETH-PERP 12 s old" in _text(dom, "reasons")
    assert _text(dom, "log").startswith("1760054400123-0") and _text(dom, "lag") == "1,200 entries"
    cell = '<td class="num">{}</td>'.format
    assert cell("0.941") in dom and cell("1.04") in dom  # health to 3 significant digits
    assert cell("0.988") in dom  # not 0.98765432109876543210987654321
    assert cell("941.20") in dom and cell("12,001.00") in dom  # money to cents
    assert cell("104,250.5") in dom  # a price to 8 significant digits
    assert "<td>21:15:07</td>" in dom  # a liquidation has its time
    assert "No price feed" not in dom

    provider = FakeProvider()
    provider.mode, provider.feeds_configured = "live", 0
    dom = await _page(tmp_path / "2", provider)
    assert _text(dom, "mode").startswith("LIVE") and _text(dom, "ready") == "ready"
    assert "No price feed is configured" in _text(dom, "hint")  # the default config's page says why


async def test_at_risk_shows_ten_rows_and_a_link_to_more(tmp_path: Path) -> None:
    provider = FakeProvider()
    many = [{**AT_RISK[2], "account": f"acct-{i:04d}", "health": Decimal("1.3") + Decimal(i) / 100}
            for i in range(30)]
    provider.rows = many
    dom = await _page(tmp_path, provider)
    shown = re.findall(r'data-key="acct-\d{4}/cross"', dom)
    assert len(shown) == 10
    assert "more…" in _text(dom, "at-risk-more")
