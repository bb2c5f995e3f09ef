"""Finding 6 of issue 14: a revoked key stops working at once, on the connections it has open.

ZAP runs only at the handshake, so removing a key from the allow-list used to stop new
connections only: a client (or node) already connected went on being served. Now every message
is checked against the allow-list as it stands (re-read when its directory changes, each loop
turn; in-place edits within a second; SIGHUP at once).

What would break: a revoked client still served on its open connection; a revoked node still
Ready and sent commands; a key file overwritten with another key under the same name leaving
the old key working (the check must be tied to the key, not to the file's name).
"""

from __future__ import annotations

import contextlib
import shutil
import time

import pytest

from tests.integration.test_security import Keys
from tests.security.backend_peer import node_row, stat
from tests.support.daemons import Daemons
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_removing_a_client_key_refuses_the_next_request_on_its_open_connection(daemons: Daemons) -> None:
    """alice is served, her key file is removed, her next request on the same connection gets
    Unauthorized (no grace period: the directory is checked every loop turn)."""
    keys = Keys(daemons)
    daemons.start_session_manager()
    with keys.client("alice") as alice:
        assert wait_for("a reply to alice", lambda: alice.call({"type": "Ping"}).get("type") == "Pong")
        (keys.clients / "alice.key").unlink()
        reply = alice.call({"type": "Ping"})
        assert (reply["type"], reply.get("code")) == ("Error", "Unauthorized"), reply
    shutil.copy(keys.dir / "mallory.key", keys.clients / "mallory.key")
    with keys.client("mallory") as mallory:
        assert stat(mallory, "unauthorized_requests") >= 1


def test_removing_a_client_key_stops_the_pushes_of_its_subscription(daemons: Daemons) -> None:
    """A dashboard subscribed with alice's key gets updates at least every second; once her key
    is removed, they stop (within a second's slack for a push already on its way), instead of
    flowing until the subscription expires unrenewed."""
    keys = Keys(daemons)
    daemons.start_session_manager()
    with keys.client("alice") as alice:
        assert wait_for("a reply to alice", lambda: alice.call({"type": "Ping"}).get("type") == "Pong")
        assert alice.call({"type": "SubscribeCluster", "interval": 0.25})["type"] == "ClusterSnapshot"
        assert alice.receive(3.0)["type"] == "ClusterUpdates"
        (keys.clients / "alice.key").unlink()
        late: list[str] = []
        deadline = time.monotonic() + 3.5  # three keep-alives and a half
        with contextlib.suppress(AssertionError):  # "no reply within": what must happen
            while (left := deadline - time.monotonic()) > 0:
                late.append(alice.receive(left)["type"])
        assert len(late) <= 1, f"pushes went on after the key was revoked: {late}"


def test_a_key_file_overwritten_with_another_key_revokes_the_old_key(daemons: Daemons) -> None:
    """`cp mallory.key clients/alice.key` keeps the name and the directory's mtime: the old
    alice key must still stop working (within the in-place check's second), and the new one
    must work."""
    keys = Keys(daemons)
    daemons.start_session_manager()
    with keys.client("alice") as alice:
        assert wait_for("a reply to alice", lambda: alice.call({"type": "Ping"}).get("type") == "Pong")
        with (keys.clients / "alice.key").open("wb") as target:  # in place: same inode, same directory
            target.write((keys.dir / "mallory.key").read_bytes())

        def refused() -> bool:
            reply = alice.call({"type": "Ping"})
            return (reply["type"], reply.get("code")) == ("Error", "Unauthorized")

        wait_for("the overwritten key to be refused", refused, timeout=5)
    with keys.client("mallory") as mallory:
        assert mallory.call({"type": "Ping"})["type"] == "Pong"


def test_removing_a_node_key_refuses_its_messages_and_the_node_goes_unknown(daemons: Daemons) -> None:
    """n1 is Ready over CURVE; its key file is removed: its heartbeats are refused (counted,
    answered Unauthorized), it gets no more commands, and it goes Unknown as a silent node."""
    keys = Keys(daemons)
    daemons.start_session_manager()
    daemons.start_executor_manager("n1", 1, "--config", str(keys.em_config("n1")))
    with keys.client("alice") as alice:
        wait_for("n1 Ready", lambda: node_row(alice, "n1").get("state") == "Ready")
        (keys.nodes / "n1.key").unlink()
        wait_for("n1 Unknown", lambda: node_row(alice, "n1").get("state") == "Unknown", timeout=10)
        wait_for("n1's heartbeats to be refused", lambda: stat(alice, "unauthorized_node_messages") >= 1, timeout=5)
    wait_for("n1 to hear it is refused", lambda: "Unauthorized" in daemons.log("n1"), timeout=5)
