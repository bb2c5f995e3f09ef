"""CURVE on the object cache: the session manager's server key and client allow-list apply to
it as to the frontend (only listed client keys get an answer, a revoked key is refused on its
open connection), and the cache's own checks with the session manager go through CURVE with a
client key of its own."""

from __future__ import annotations

import shutil

import pytest
import zmq.auth

from flamed.cli.flamed import main
from tests.cache.conftest import configure
from tests.integration.test_security import REFUSED_WITHIN, Keys
from tests.support.daemons import Daemons, RawClient
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def cache_client(keys: Keys, daemons: Daemons, name: str, timeout: float = 10.0) -> RawClient:
    server, _ = zmq.auth.load_certificate(keys.dir / "server.key")
    public, secret = keys.pair(name)
    return RawClient(daemons.cache, timeout, curve=(server, public, secret))


def answers(client: RawClient) -> bool:
    with client:
        try:
            return bool(client.call({"type": "CacheHello", "protocol_version": 1})["type"] == "CacheWelcome")
        except AssertionError:
            return False


def test_only_listed_client_keys_reach_the_object_cache(cache_daemons: Daemons) -> None:
    """Would break if the cache's socket were plain (anyone reads every object) or took keys the
    session manager's allow-list does not list."""
    configure(cache_daemons)
    keys = Keys(cache_daemons)
    assert main(["keygen", "--out", str(keys.dir), "--name", "cache"]) == 0
    shutil.copy(keys.dir / "cache.key", keys.clients / "cache.key")
    cache_config = cache_daemons.dir / "cache.toml"
    cache_config.write_text(
        cache_daemons.config.read_text()
        + f'server_public_key = "{keys.dir}/server.key"\nclient_secret_key = "{keys.dir}/cache.key_secret"\n'
    )
    cache_daemons.start_session_manager()
    cache_daemons.start_object_cache("--config", str(cache_config))
    assert wait_for("alice's hello to be answered", lambda: answers(cache_client(keys, cache_daemons, "alice")))
    assert not answers(RawClient(cache_daemons.cache, REFUSED_WITHIN)), "a plain client was answered"
    assert not answers(cache_client(keys, cache_daemons, "mallory", REFUSED_WITHIN)), "an unlisted key was answered"
    with keys.client("alice") as sm, cache_client(keys, cache_daemons, "alice") as cache:
        sm.call({"type": "RegisterApplication", "name": "app", "spec": {"command": "/bin/true"}})
        assert sm.call({"type": "CreateSession", "session_id": "s1", "spec": {"application": "app"}})["type"] == (
            "SessionReply"
        )
        assert cache.call({"type": "PutObject", "key": "app/s1/o", "data": b"x"})["type"] == "ObjectStored"

        def live() -> bool:
            return bool(cache.call({"type": "GetCacheStats"})["stats"].get("sessions_live", 0) >= 1)

        wait_for("the cache's session check to pass CURVE", live)
        (keys.clients / "alice.key").unlink()  # revoked: refused at once on the open connection
        refused = cache.call({"type": "GetObject", "key": "app/s1/o"})
        assert refused["code"] == "Unauthorized"
        assert "allow-list" in refused["message"]
