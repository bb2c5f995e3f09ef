"""`flamed cluster` puts its object cache next to its frontend unless told otherwise, so clusters
started side by side (README: own --frontend, --backend and --state-dir each) do not collide on
the cache's default port (the second one used to fail: 'cannot bind tcp://127.0.0.1:8082')."""

from __future__ import annotations

import pytest

from flamed.cli.cluster import cache_endpoint_for
from flamed.config import DEFAULT_CACHE, Config, parse_config

pytestmark = pytest.mark.timeout(10)


def test_the_default_frontend_keeps_the_default_cache() -> None:
    """Breaks if a cluster on the default frontend does not find its object cache on the default endpoint."""
    assert cache_endpoint_for("tcp://127.0.0.1:8080", Config()) == DEFAULT_CACHE


def test_another_frontend_moves_the_cache_beside_it() -> None:
    """Breaks if a cluster on another frontend (tcp, IPv6 or ipc) does not put its cache endpoint beside it, so
    two clusters on one host would share one cache."""
    assert cache_endpoint_for("tcp://127.0.0.1:9080", Config()) == "tcp://127.0.0.1:9082"
    assert cache_endpoint_for("tcp://[::1]:9080", Config()) == "tcp://[::1]:9082"
    assert cache_endpoint_for("ipc:///tmp/c2/fe", Config()) == "ipc:///tmp/c2/fe-cache"


def test_a_configured_cache_endpoint_wins() -> None:
    """Breaks if [cache] endpoint in the config is overridden by the one derived from the frontend."""
    config = parse_config({"cache": {"endpoint": "tcp://10.0.0.1:7000"}})
    assert cache_endpoint_for("tcp://127.0.0.1:9080", config) == "tcp://10.0.0.1:7000"
