"""``redis+cluster://`` URLs (``keeper.store.slotconn``): no server needed."""

from __future__ import annotations

import pytest

from keeper.errors import LogError
from keeper.store.redis_log import make_client
from keeper.store.slotconn import is_cluster_url, parse_cluster_url


def test_cluster_url_names_seeds_and_credentials() -> None:
    assert parse_cluster_url("redis+cluster://u:p%40ss@127.0.0.1:7000,[::1]:7001,h:7002") == (
        [("127.0.0.1", 7000), ("::1", 7001), ("h", 7002)], "u", "p@ss")
    assert parse_cluster_url("redis+cluster://127.0.0.1:7000/") == ([("127.0.0.1", 7000)], None, None)
    assert is_cluster_url("redis+cluster://h:1") and not is_cluster_url("redis://h:1/0")
    assert not is_cluster_url(None)


@pytest.mark.parametrize("url", ["redis+cluster://h:1/3", "redis+cluster://h", "redis://h:1",
                                 "redis+cluster://h:1?ssl=true"])
def test_bad_cluster_urls_are_refused_with_the_form(url: str) -> None:
    with pytest.raises(LogError, match="host:port"):
        parse_cluster_url(url)


def test_single_redis_client_refuses_a_cluster_url() -> None:
    with pytest.raises(LogError, match="only the event log"):
        make_client("redis+cluster://127.0.0.1:7000")
