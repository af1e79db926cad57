"""Fixtures on a real Redis Cluster (``keeper.store.cluster.EmbeddedCluster``).

- ``redis_cluster``: 3 primaries with a replica each, ``redis-server`` processes on free
  loopback ports in a temporary folder, for the whole test session (about 10 s to create).
  Tests may kill and restart its nodes; ``cluster_url`` puts it back first.
- ``cluster_url``: its ``redis+cluster://`` URL, every node running, the cluster settled and
  every primary flushed.
- ``store_url``: each test twice, on the embedded single Redis (``redis_url``) and on the cluster.

Without ``redis-server`` or ``redis-cli`` these tests skip, naming the fix.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from keeper.errors import EmbeddedRedisError
from keeper.store.cluster import EmbeddedCluster, find_redis_cli
from keeper.store.embedded import find_redis_server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    try:
        find_redis_server()
        find_redis_cli()
    except EmbeddedRedisError as exc:
        pytest.skip(f"no Redis Cluster can be started here: {exc}")
    cluster = EmbeddedCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: EmbeddedCluster) -> str:
    for node in redis_cluster.nodes:
        if not node.running():
            redis_cluster.restart(node)
    redis_cluster.wait_settled()
    for node in redis_cluster.primaries():
        with redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5) as c:
            c.flushall()
    return redis_cluster.url


@pytest.fixture(params=["redis", "cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    """A flushed store of either kind: the embedded single Redis or the real cluster."""
    url: str = request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    return url
