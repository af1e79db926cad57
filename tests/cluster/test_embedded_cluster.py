"""``keeper.store.cluster``: the cluster that tests and ``make cluster`` start, and stop by PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from keeper.errors import EmbeddedRedisError
from keeper.store.cluster import SLOTS, EmbeddedCluster, cluster_pids, parse_cluster_nodes

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KEEPER_PURE": "1"}
    return subprocess.run([sys.executable, "-m", "keeper.store.cluster", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180, check=False)


def test_settled_cluster_has_three_primaries_with_a_replica_each(redis_cluster: EmbeddedCluster,
                                                                 cluster_url: str) -> None:
    primaries, replicas = redis_cluster.primaries(), redis_cluster.replicas()
    assert len(primaries) == 3 and len(replicas) == 3
    views = redis_cluster.topology()
    assert sum(hi - lo + 1 for v in views if v.primary for lo, hi in v.slots) == SLOTS
    by_id = {v.node_id: v for v in views}
    assert sorted(by_id[v.primary_id].port for v in views if not v.primary and v.primary_id) \
        == sorted(p.port for p in primaries)  # one replica each
    assert redis_cluster.node_for_key("keeper:{0}:log") in primaries
    assert cluster_url.startswith("redis+cluster://127.0.0.1:")
    state = json.loads((redis_cluster.root / "cluster.json").read_text())
    assert sorted(n["pid"] for n in state["nodes"]) == sorted(cluster_pids(redis_cluster.root))


def test_missing_redis_cli_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match=r"no redis-cli binary found .*apt-get install"):
        EmbeddedCluster(tmp_path, cli=str(tmp_path / "nope")).start()
    assert not list(tmp_path.iterdir())  # nothing started


def test_parse_cluster_nodes_reads_roles_slots_and_failures() -> None:
    text = (
        "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [93->-b2]\n"
        "b2 127.0.0.1:7001@17001 master,fail - 0 0 2 disconnected\n"
        "c3 127.0.0.1:7002@17002,host slave a1 0 0 1 connected\n")
    a, b, c = parse_cluster_nodes(text)
    assert (a.port, a.primary, a.slots, a.failing) == (7000, True, ((0, 5460),), False)
    assert (b.failing, b.connected, b.slots) == (True, False, ())
    assert (c.port, c.primary, c.primary_id) == (7002, False, "a1")


def test_cli_starts_a_cluster_that_outlives_it_and_stops_it_by_pid(tmp_path: Path) -> None:
    """``make cluster`` / ``make cluster-stop``: start in one process, stop from another; a
    stopped cluster starts again in its folder on the same ports, with its data."""
    d = str(tmp_path / "c")
    try:
        res = cli("start", "--dir", d)
        assert res.returncode == 0, res.stderr[-2000:]
        url = res.stdout.strip().splitlines()[-1]
        assert url.startswith("redis+cluster://")
        pids = cluster_pids(Path(d))
        assert len(pids) == 6
        status = cli("status", "--dir", d)
        assert status.returncode == 0 and status.stdout.count(" primary ") == 3
        port = int(url.split("//")[1].split(",")[0].split(":")[1])
        with redis.RedisCluster(host="127.0.0.1", port=port) as c:
            c.set("k{x}", "v")
        assert cli("start", "--dir", d).stdout.strip() == url  # already running: the same URL
        assert cli("stop", "--dir", d).returncode == 0
        assert cluster_pids(Path(d)) == [] and all(not Path(f"/proc/{p}").exists() for p in pids)
        assert cli("status", "--dir", d).returncode == 1
        again = cli("start", "--dir", d)
        assert again.returncode == 0, again.stderr[-2000:]
        assert again.stdout.strip().splitlines()[-1] == url  # the same nodes, ports and data
        with redis.RedisCluster(host="127.0.0.1", port=port) as c:
            assert c.get("k{x}") == b"v"
    finally:
        cli("stop", "--dir", d)
