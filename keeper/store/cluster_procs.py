"""The processes of an ``EmbeddedCluster`` as its ``cluster.json`` records them: which are
still its nodes (``cluster_pids``: a PID is trusted only while ``/proc`` shows a redis-server on
that node's port), and stopping them from another process (``stop_by_pid``, ``make
cluster-stop``).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

__all__ = ["CLUSTER_FILE", "cluster_pids", "read_state", "stop_by_pid"]

CLUSTER_FILE = "cluster.json"
"""In a cluster's root: its nodes' ports and PIDs, and its URL."""


def read_state(root: Path) -> dict[str, object] | None:
    try:
        info = json.loads((Path(root) / CLUSTER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _is_node_process(pid: int, port: int) -> bool:
    """Whether ``pid`` is alive and a redis-server on ``port`` (a PID may be reused)."""
    try:  # redis-server rewrites its title: "/usr/bin/redis-server 127.0.0.1:7000 [cluster]"
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"redis-server" in cmd and f":{port} ".encode() in cmd + b" "


def cluster_pids(root: Path) -> list[int]:
    """The PIDs of the live nodes recorded in ``root``'s ``cluster.json``."""
    info = read_state(root)
    nodes = info.get("nodes") if info else None
    out = []
    for n in nodes if isinstance(nodes, list) else []:
        pid, port = n.get("pid"), n.get("port")
        if isinstance(pid, int) and isinstance(port, int) and _is_node_process(pid, port):
            out.append(pid)
    return out


def stop_by_pid(root: Path, timeout: float = 10.0) -> int:
    """SIGTERM the nodes recorded in ``root`` (another process started them), wait for each,
    SIGKILL one that outlives ``timeout``; return how many were stopped."""
    pids = cluster_pids(root)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            try:  # our child (the same process started it): reap it, else wait for it to go
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    break
            except ChildProcessError:
                pass
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists() and _zombie(pid) is False:
            os.kill(pid, signal.SIGKILL)
    for server_file in Path(root).glob("node-*/server.json"):
        server_file.unlink(missing_ok=True)
    return len(pids)


def _zombie(pid: int) -> bool | None:
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
