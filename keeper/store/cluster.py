"""A real Redis Cluster of ``redis-server`` processes on loopback (tests, ``make cluster``, benches).

Contract: ``start()`` runs ``primaries * (1 + replicas)`` redis-servers in cluster mode, each an
``EmbeddedRedis`` in its own folder ``<root>/node-<i>`` (AOF on, ``cluster-config-file
nodes.conf``, ``cluster-node-timeout`` ``node_timeout_ms``: 2 s by default, so a dead primary's
replica takes over within a few seconds), joins them with ``redis-cli --cluster create ...
--cluster-replicas R --cluster-yes`` and returns the cluster's URL (``redis+cluster://``, see
``keeper.store.slotconn``) once the cluster is *settled*: every live node says
``cluster_state:ok`` with all 16384 slots assigned and ok, knows every node, flags no live node
as failing, all agree on who owns which slot, and every live replica's link to its primary is up.

``stop()`` sends each node SIGTERM (its clean shutdown) by PID and waits; ``kill(node)`` sends
SIGKILL (a crash); ``restart(node)`` starts it again on its port and folder: its
``nodes.conf`` makes it rejoin, as a replica of whichever node holds its slots now.
``wait_for_failover(old_primary)`` waits until another node serves every slot the old primary
served and the cluster is settled again. A root that already holds a stopped cluster (a
``nodes.conf`` in each node folder, the ports in ``cluster.json``) starts again as it was.

Topology is read from the nodes themselves (``CLUSTER NODES``): ``primaries()``, ``replicas()``,
``node_for_slot()``, ``node_for_key()`` return the ``EmbeddedRedis`` of the node concerned.

``cluster.json`` in the root holds each node's port and PID and the URL, so another process
stops the cluster by PID (``python -m keeper.store.cluster stop``: ``make cluster-stop``); a
PID is signalled only while ``/proc`` shows a redis-server on that node's port. Missing
``redis-server`` or ``redis-cli``: ``EmbeddedRedisError`` naming the fix.

Ports: a cluster node also listens on its port + 10000 (the cluster bus), so a node's port is a
free one of at most 55535 whose bus port is free too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis
import redis.exceptions
import structlog
from redis.crc import key_slot

from keeper.errors import EmbeddedRedisError
from keeper.store.cluster_procs import CLUSTER_FILE, cluster_pids, read_state, stop_by_pid
from keeper.store.embedded import EmbeddedRedis, find_binary, find_redis_server, free_port

log = structlog.get_logger()

__all__ = ["BUS_OFFSET", "CLUSTER_FILE", "SLOTS", "EmbeddedCluster", "NodeView", "cluster_pids",
           "find_redis_cli", "free_cluster_port", "main", "parse_cluster_nodes", "stop_by_pid"]

SLOTS = 16384
BUS_OFFSET = 10000
"""A cluster node's bus port is its port + 10000 (Redis' fixed offset)."""
_CLI_FIX = ("install it: sudo apt-get install redis-tools (redis-server's package has it), "
            "or set KEEPER_REDIS_CLI")
_SETTLE_TIMEOUT_S = 60.0
_START_ATTEMPTS = 3


def find_redis_cli(binary: str | None = None) -> str:
    """The redis-cli binary: ``binary``, else $KEEPER_REDIS_CLI, else PATH, else beside
    redis-server, else /usr/bin."""

    def fallbacks() -> list[str]:
        out = []
        with contextlib.suppress(EmbeddedRedisError):
            out.append(str(Path(find_redis_server()).with_name("redis-cli")))
        return [*out, "/usr/bin/redis-cli"]

    return find_binary("redis-cli", binary, "KEEPER_REDIS_CLI", fallbacks, _CLI_FIX)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port(taken: set[int]) -> int:
    """A free loopback port whose cluster bus port (+10000) is free too, not in ``taken``."""
    for _ in range(200):
        p = free_port()
        if p + BUS_OFFSET <= 65535 and p not in taken and p + BUS_OFFSET not in taken \
                and _port_free(p + BUS_OFFSET):
            return p
    raise EmbeddedRedisError("no free loopback port pair (port, port + 10000) for a cluster node")


@dataclass(frozen=True)
class NodeView:
    """One line of ``CLUSTER NODES``: a node as another node (or itself) sees it."""

    node_id: str
    port: int
    primary: bool
    primary_id: str | None
    failing: bool  # flagged ``fail`` or ``fail?``
    connected: bool
    slots: tuple[tuple[int, int], ...]


def parse_cluster_nodes(text: str) -> list[NodeView]:
    """``CLUSTER NODES`` -> views (slots being imported or migrated, ``[...]``, are skipped)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        addr = parts[1].split("@", 1)[0].split(",", 1)[0]
        flags = set(parts[2].split(","))
        slots = []
        for s in parts[8:]:
            if s.startswith("["):
                continue
            lo, _, hi = s.partition("-")
            slots.append((int(lo), int(hi or lo)))
        out.append(NodeView(parts[0], int(addr.rsplit(":", 1)[1] or 0), "master" in flags,
                            None if parts[3] == "-" else parts[3],
                            bool(flags & {"fail", "fail?"}), parts[7] == "connected",
                            tuple(slots)))
    return out


class EmbeddedCluster:
    """A Redis Cluster on loopback; see the module docstring for the contract."""

    def __init__(self, root: Path, primaries: int = 3, replicas: int = 1, *,
                 node_timeout_ms: int = 2000, appendfsync: str = "everysec",
                 binary: str | None = None, cli: str | None = None) -> None:
        if primaries < 3:
            raise EmbeddedRedisError("a Redis Cluster needs at least 3 primaries")
        if replicas < 0:
            raise EmbeddedRedisError("replicas must be 0 or more")
        self.root = Path(root).resolve()
        self.n_primaries, self.n_replicas = primaries, replicas
        self.node_timeout_ms = node_timeout_ms
        self.appendfsync = appendfsync
        self.binary, self.cli = binary, cli
        self.nodes: list[EmbeddedRedis] = []
        self._slots_at_kill: dict[int, tuple[tuple[int, int], ...]] = {}

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node as a seed (any live one is enough to connect)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def urls(self) -> list[str]:
        """Each node's own ``redis://`` URL (all nodes, live or not)."""
        return [n.url for n in self.nodes]

    def _node(self, i: int, port: int) -> EmbeddedRedis:
        return EmbeddedRedis(self.root / f"node-{i}", port, appendfsync=self.appendfsync,
                             binary=self.binary, extra_args=[
                                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                 "--cluster-node-timeout", str(self.node_timeout_ms)])

    def start(self, timeout: float = _SETTLE_TIMEOUT_S) -> str:
        """Start the cluster (create it, or start a stopped one in ``root`` as it was); return
        its URL once settled."""
        find_redis_server(self.binary)  # both binaries before anything starts: one clear error
        cli = find_redis_cli(self.cli)
        total = self.n_primaries * (1 + self.n_replicas)
        running = cluster_pids(self.root)
        if running:
            raise EmbeddedRedisError(f"a cluster already runs in {self.root} (pids {running}): "
                                     "stop it first (python -m keeper.store.cluster stop)")
        recorded = self._recorded_ports()
        try:
            if recorded is not None and len(recorded) == total:
                self.nodes = [self._node(i, p) for i, p in enumerate(recorded)]
                for n in self.nodes:
                    n.start()
                self._write_state()
            else:
                self._create(cli, total)
            self.wait_settled(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("embedded_cluster_started", root=str(self.root), ports=[n.port for n in self.nodes])
        return self.url

    def _recorded_ports(self) -> list[int] | None:
        """The ports of a stopped cluster in ``root`` that can start again, else None."""
        try:
            info = json.loads((self.root / CLUSTER_FILE).read_text())
            ports = [int(n["port"]) for n in info["nodes"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if all((self.root / f"node-{i}" / "nodes.conf").is_file() for i in range(len(ports))):
            return ports
        return None

    def _create(self, cli: str, total: int) -> None:
        if self.root.exists():  # leftovers of a cluster that cannot start again: start afresh
            for child in self.root.glob("node-*"):
                shutil.rmtree(child, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        taken: set[int] = set()
        self.nodes = []
        for i in range(total):
            for attempt in range(_START_ATTEMPTS):  # another process may take a port meanwhile
                node = self._node(i, free_cluster_port(taken))
                try:
                    node.start()
                    break
                except EmbeddedRedisError:
                    if attempt == _START_ATTEMPTS - 1:
                        raise
            taken |= {node.port, node.port + BUS_OFFSET}
            self.nodes.append(node)
        self._write_state()
        args = [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", str(self.n_replicas), "--cluster-yes"]
        res = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False,  # noqa: S603
                             stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise EmbeddedRedisError(f"redis-cli --cluster create failed ({res.returncode}): "
                                     f"{(res.stdout + res.stderr)[-2000:]}")

    def _write_state(self) -> None:
        info = {"url": self.url, "primaries": self.n_primaries, "replicas": self.n_replicas,
                "nodes": [{"port": n.port, "pid": n.pid, "dir": str(n.data_dir)} for n in self.nodes]}
        path = self.root / CLUSTER_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=1) + "\n")
        tmp.replace(path)

    def stop(self) -> None:
        """SIGTERM every node (each flushes its AOF and nodes.conf), wait; ports stay recorded."""
        for n in self.nodes:
            n.stop()
        if self.nodes:
            self._write_state()
        log.info("embedded_cluster_stopped", root=str(self.root))

    def kill(self, node: EmbeddedRedis) -> None:
        """SIGKILL one node: a crash (its slots, if a primary, are remembered for
        ``wait_for_failover``)."""
        for v in self.topology():
            if v.port == node.port and v.primary:
                self._slots_at_kill[node.port] = v.slots
        node.kill()
        self._write_state()

    def restart(self, node: EmbeddedRedis, timeout: float = _SETTLE_TIMEOUT_S) -> None:
        """Start a stopped or killed node again on its port and folder; wait until the cluster
        is settled with it (a former primary comes back as a replica)."""
        node.start()
        self._write_state()
        self.wait_settled(timeout)

    def __enter__(self) -> EmbeddedCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ topology

    def live(self) -> list[EmbeddedRedis]:
        return [n for n in self.nodes if n.running()]

    def _client(self, node: EmbeddedRedis) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5,
                           socket_connect_timeout=1, decode_responses=True)

    def _by_port(self, port: int) -> EmbeddedRedis:
        for n in self.nodes:
            if n.port == port:
                return n
        raise EmbeddedRedisError(f"no node of this cluster on port {port}")

    def topology(self) -> list[NodeView]:
        """The cluster as the first live node that answers sees it."""
        last: Exception | None = None
        for n in self.live():
            try:
                with self._client(n) as c:
                    return parse_cluster_nodes(str(c.execute_command("CLUSTER", "NODES")))
            except redis.exceptions.RedisError as exc:
                last = exc
        raise EmbeddedRedisError(f"no node of the cluster answers: {last}")

    def primaries(self) -> list[EmbeddedRedis]:
        """The live primaries that serve slots, by port."""
        return [self._by_port(v.port) for v in sorted(self.topology(), key=lambda v: v.port)
                if v.primary and v.slots and not v.failing]

    def replicas(self) -> list[EmbeddedRedis]:
        """The live replicas, by port."""
        return [self._by_port(v.port) for v in sorted(self.topology(), key=lambda v: v.port)
                if not v.primary and not v.failing and v.connected]

    def node_for_slot(self, slot: int, wait_s: float = 5.0) -> EmbeddedRedis:
        """The running primary that serves ``slot`` now. Right after a failover the node asked
        may still name the dead one (gossip takes a moment): a view naming a node that is not
        running or failing is asked again, for at most ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while True:
            for v in self.topology():
                if v.primary and not v.failing and any(lo <= slot <= hi for lo, hi in v.slots):
                    node = self._by_port(v.port)
                    if node.running():
                        return node
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(f"no running node serves slot {slot}")
            time.sleep(0.05)

    def node_for_key(self, key: str) -> EmbeddedRedis:
        """The primary that serves ``key``'s slot (its ``{hash tag}`` decides)."""
        return self.node_for_slot(key_slot(key.encode()))

    # ------------------------------------------------------------------ waiting

    def settled(self) -> str | None:
        """None when the cluster is settled (see the module docstring), else what is not yet."""
        live = self.live()
        if not live:
            return "no node runs"
        live_ports = {n.port for n in live}
        owners: dict[tuple[int, int], int] | None = None
        for n in live:
            try:
                with self._client(n) as c:
                    info = str(c.execute_command("CLUSTER", "INFO"))
                    views = parse_cluster_nodes(str(c.execute_command("CLUSTER", "NODES")))
                    me = next((v for v in views if v.port == n.port), None)
                    link = None if me is None or me.primary else c.info("replication").get(
                        "master_link_status")
            except redis.exceptions.RedisError as exc:
                return f"{n.port}: {exc}"
            fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
            for k, want in (("cluster_state", "ok"), ("cluster_slots_assigned", str(SLOTS)),
                            ("cluster_slots_ok", str(SLOTS)),
                            ("cluster_known_nodes", str(len(self.nodes)))):
                if fields.get(k) != want:
                    return f"{n.port}: {k} {fields.get(k)}"
            if any(v.failing and v.port in live_ports for v in views):
                return f"{n.port} sees a live node as failing"
            if link not in (None, "up"):
                return f"{n.port}: replica link {link}"
            mine = {s: v.port for v in views if v.primary for s in v.slots}
            if owners is None:
                owners = mine
            elif mine != owners:
                return f"{n.port} disagrees on slot owners"
        if owners is not None and any(p not in live_ports for p in owners.values()):
            return "a dead node still owns slots"
        return None

    def wait_settled(self, timeout: float = _SETTLE_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            why = self.settled()
            if why is None:
                return
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(f"cluster in {self.root} not settled within {timeout}s: {why}")
            time.sleep(0.05)

    def wait_for_failover(self, old_primary: EmbeddedRedis, timeout: float = _SETTLE_TIMEOUT_S
                          ) -> EmbeddedRedis:
        """After ``kill(old_primary)``: wait until a replica serves its slots and the cluster is
        settled; return the new primary."""
        slots = self._slots_at_kill.get(old_primary.port)
        if not slots:
            raise EmbeddedRedisError(f"node {old_primary.port} was not a primary killed by kill()")
        self.wait_settled(timeout)
        new = self.node_for_slot(slots[0][0])
        if new.port == old_primary.port:  # it came back and still serves them: no failover
            raise EmbeddedRedisError(f"node {old_primary.port} serves its slots again: no failover")
        return new


# ---------------------------------------------------------------------- another process's cluster


def main(argv: list[str] | None = None) -> int:
    """``python -m keeper.store.cluster start|stop|status [--dir D] [--primaries 3 --replicas 1]``:
    the URL (start) or one line per node (status) on stdout, logs on stderr; an error is one
    line on stderr, exit status 1."""
    ap = argparse.ArgumentParser(prog="python -m keeper.store.cluster",
                                 description="A local Redis Cluster on loopback ports.")
    ap.add_argument("action", choices=["start", "stop", "status"])
    ap.add_argument("--dir", type=Path, default=Path(".keeper/cluster"))
    ap.add_argument("--primaries", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--node-timeout-ms", type=int, default=2000)
    args = ap.parse_args(argv)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    root: Path = args.dir.resolve()
    out = sys.stdout
    try:
        if args.action == "start":
            if cluster_pids(root):
                out.write(f"{(read_state(root) or {}).get('url')}\n")
                sys.stderr.write(f"already running in {root}\n")
                return 0
            cluster = EmbeddedCluster(root, args.primaries, args.replicas,
                                      node_timeout_ms=args.node_timeout_ms)
            out.write(f"{cluster.start()}\n")
            return 0
        if args.action == "stop":
            n = stop_by_pid(root)
            sys.stderr.write(f"stopped {n} nodes in {root}\n")
            return 0
        return _status(root)
    except EmbeddedRedisError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1


def _status(root: Path) -> int:
    info = read_state(root)
    pids = cluster_pids(root)
    if not info or not pids:
        sys.stderr.write(f"no cluster runs in {root}\n")
        return 1
    lines = [str(info.get("url"))]
    views: list[NodeView] = []
    nodes = info.get("nodes")
    for n in nodes if isinstance(nodes, list) else []:
        try:
            with redis.Redis(host="127.0.0.1", port=int(n["port"]), socket_timeout=2,
                             socket_connect_timeout=1, decode_responses=True) as c:
                views = views or parse_cluster_nodes(str(c.execute_command("CLUSTER", "NODES")))
        except redis.exceptions.RedisError:
            continue
    for v in sorted(views, key=lambda v: v.port):
        role = "primary" if v.primary else "replica"
        slots = " ".join(f"{lo}-{hi}" for lo, hi in v.slots)
        lines.append(f"127.0.0.1:{v.port} {role}{' failing' if v.failing else ''} {slots}".rstrip())
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
