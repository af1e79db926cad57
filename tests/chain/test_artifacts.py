"""The committed Morpho Blue artifact: its ABI, its provenance, and its bytecode deploying on anvil."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keeper.chain import artifacts
from keeper.chain.anvil import REPO_ROOT, Anvil, AnvilError, anvil_binary, rpc

MORPHO_SRC = REPO_ROOT / "node_modules" / "@morpho-org" / "morpho-blue" / "src"


def _events(abi: list[dict[str, object]]) -> set[str]:
    return {str(e["name"]) for e in abi if e["type"] == "event"}


def test_artifact_loads_with_morphos_events_and_liquidate() -> None:
    contracts = artifacts.load()
    assert set(contracts) == {"Morpho", "ERC20Mock", "OracleMock", "IrmMock"}
    for c in contracts.values():
        assert c.bytecode, c.name
    morpho = contracts["Morpho"]
    # EventsLib's events: solc 0.8.19 leaves them out of Morpho's own ABI, the build merges them in
    assert {"Liquidate", "Borrow", "AccrueInterest", "CreateMarket"} <= _events(morpho.abi)
    assert any(e["type"] == "function" and e["name"] == "liquidate" for e in morpho.abi)
    sigs = [(e["type"], e.get("name"), tuple(i["type"] for i in e.get("inputs", []))) for e in morpho.abi]
    assert len(sigs) == len(set(sigs)), "duplicate ABI entries"


def test_provenance_names_the_package_compiler_and_settings() -> None:
    prov = artifacts.provenance()
    assert prov["package"]["name"] == "@morpho-org/morpho-blue"
    assert prov["package"]["version"] == "1.0.0"
    assert prov["package"]["integrity"].startswith("sha512-")
    assert prov["compiler"]["version"].startswith("0.8.19+commit.")
    s = prov["settings"]
    assert s["viaIR"] is True
    assert s["optimizer"] == {"enabled": True, "runs": 999999}
    assert s["evmVersion"] == "paris"
    assert "Morpho.sol" in prov["sources"] and "libraries/EventsLib.sol" in prov["sources"]


def test_provenance_source_hashes_match_the_installed_package() -> None:
    if not MORPHO_SRC.is_dir():
        pytest.skip(f"{MORPHO_SRC} is absent: the sources are a dev dependency "
                    "(`make artifacts` installs them)")
    for rel, digest in artifacts.provenance()["sources"].items():
        path = MORPHO_SRC / rel
        assert path.is_file(), f"{rel} is in the provenance but not in the installed package"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{rel} differs: run `make artifacts`"


@pytest.fixture
def anvil_ok() -> None:
    try:
        anvil_binary()
    except AnvilError as exc:
        pytest.skip(f"anvil is not installed ({exc})")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.usefixtures("anvil_ok")
def test_anvil_answers_chain_id_and_stop_leaves_no_process() -> None:
    node = Anvil().start(chain_id=4242)
    pid = node.pid
    assert pid is not None
    try:
        assert int(rpc(node.http_url, "eth_chainId"), 16) == 4242
        assert node.ws_url == f"ws://127.0.0.1:{node.port}"
    finally:
        node.stop()
    assert node.pid is None
    assert _gone(pid)
    node.stop()  # idempotent


@pytest.mark.usefixtures("anvil_ok")
def test_anvil_restarts_on_the_same_port_after_a_kill() -> None:
    with Anvil().start(chain_id=7) as node:
        url, first = node.http_url, node.pid
        assert first is not None
        node.kill()
        assert _gone(first)
        node.restart()
        assert node.http_url == url
        assert int(rpc(node.http_url, "eth_chainId"), 16) == 7
        second = node.pid
    assert second is not None and _gone(second)


@pytest.fixture
def node(anvil_ok: None) -> Iterator[Anvil]:
    with Anvil().start() as n:
        yield n


def test_morpho_bytecode_deploys_on_anvil(node: Anvil) -> None:
    url = node.http_url
    owner = rpc(url, "eth_accounts")[0]
    morpho = artifacts.load()["Morpho"]
    ctor_arg = bytes.fromhex(owner[2:]).rjust(32, b"\0")  # constructor(address newOwner)
    tx = rpc(url, "eth_sendTransaction", [{"from": owner, "data": "0x" + (morpho.bytecode + ctor_arg).hex()}])
    receipt = None
    deadline = time.monotonic() + 5
    while receipt is None and time.monotonic() < deadline:  # automine: the block follows at once
        receipt = rpc(url, "eth_getTransactionReceipt", [tx])
        if receipt is None:
            time.sleep(0.01)
    assert receipt is not None, "no receipt within 5 s"
    assert int(receipt["status"], 16) == 1
    address = receipt["contractAddress"]
    code = rpc(url, "eth_getCode", [address, "latest"])
    assert len(code) > 2
    # owner() (selector 0x8da5cb5b) is the address the constructor was given
    got = rpc(url, "eth_call", [{"to": address, "data": "0x8da5cb5b"}, "latest"])
    assert int(got, 16) == int(owner, 16)


def test_missing_binary_names_make_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KEEPER_ANVIL", str(tmp_path / "no-anvil"))
    with pytest.raises(AnvilError, match="make setup"):
        anvil_binary()
