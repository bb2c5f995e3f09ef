"""Fixtures for the object-cache tests: real daemons (tests/support: the `daemons` fixture) with a
small chunk size, so that uploads and chunked reads happen with objects of a few hundred KB."""

from __future__ import annotations

import pytest

from flamed.client.cache import ObjectRef
from tests.support.daemons import Daemons, RawClient
from tests.support.waiting import wait_for

#: chunk_size of the test caches: objects above it are streamed
CHUNK = 64 * 1024


def cache_config(**keys: object) -> str:
    values = {"chunk_size": CHUNK, "session_check_interval": 0.2, **keys}
    return "[cache]\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items())


@pytest.fixture
def cache_daemons(daemons: Daemons, monkeypatch: pytest.MonkeyPatch) -> Daemons:
    """A test's daemons (the suite's `daemons`: stopped afterwards, none left behind) with
    `[cache]` settings appended to its config by `configure` (tests add more before starting
    anything). FLAME_CACHE_ENDPOINT points the SDK of this process at its cache."""
    monkeypatch.setenv("FLAME_CACHE_ENDPOINT", daemons.cache)
    return daemons


def configure(daemons: Daemons, **keys: object) -> None:
    with daemons.config.open("a") as f:
        f.write(cache_config(**keys))


def wait_cache_ready(daemons: Daemons) -> None:
    with RawClient(daemons.cache, timeout=2) as raw:

        def answers() -> bool:
            try:
                return raw.call({"type": "CacheHello", "protocol_version": 1}).get("type") == "CacheWelcome"
            except AssertionError:
                return False

        wait_for("the object cache to answer", answers, timeout=30)


def cache_stats(daemons: Daemons) -> dict[str, float]:
    with RawClient(daemons.cache) as raw:
        stats: dict[str, float] = raw.call({"type": "GetCacheStats"})["stats"]
        return stats


def fresh(ref: ObjectRef) -> ObjectRef:
    """The same object, read past this process's copy (flamepy's version 0)."""
    return ObjectRef(endpoint=ref.endpoint, key=ref.key, version=0)
