"""Finding 3 of issue 14: a backend routing id cannot be taken over.

Today's attack: a client reads a node's `incarnation` from ListNodes, connects to the backend
with the routing id the executor manager derived from it (`em:<node>:<incarnation>`), and the
backend ROUTER (ROUTER_HANDOVER) hands it the node's traffic; the real node goes Unknown and
loses its executors. With CURVE the same works with another node's key, since only incoming
messages were checked against keys.

What would break: a routing id derived from anything a client can read, or a backend that
hands a connected id over to a newcomer (even one that learnt the id); the thief would receive
the node's heartbeats and commands (task inputs) and the real node would be cut off.
"""

from __future__ import annotations

import pytest

from tests.integration.test_security import Keys
from tests.security.backend_peer import BackendPeer, curve_of, node_row, register_message, stat
from tests.support.daemons import Daemons, RawClient
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

DETECTION = 0.5 * 4  # Daemons' config: heartbeat_interval x heartbeat_liveness
LISTEN = DETECTION + 1.0  # the thief listens longer than a node may be silent


def _assert_untouched(client: RawClient, before: dict[str, object]) -> None:
    after = node_row(client, "n1")
    assert (after["state"], after["epoch"], after["incarnation"]) == (
        "Ready",
        before["epoch"],
        before["incarnation"],
    ), after
    assert stat(client, "nodes_silent") == 0


def test_a_client_that_reads_a_nodes_incarnation_cannot_take_its_backend_traffic(daemons: Daemons) -> None:
    """Plain mode: the id a client could derive from ListNodes gets nothing, and the node
    stays Ready in the same epoch (it was never cut off)."""
    daemons.start_session_manager()
    daemons.start_executor_manager("n1", 1)
    daemons.wait_ready_nodes(1)
    with daemons.client() as client:
        before = node_row(client, "n1")
        with BackendPeer(daemons.backend, f"em:n1:{before['incarnation']}".encode()) as thief:
            stolen = thief.collect(LISTEN)
        assert stolen == [], f"the thief got the node's traffic: {stolen[:3]}"
        _assert_untouched(client, before)


def test_a_connected_routing_id_is_never_handed_to_a_newcomer(daemons: Daemons) -> None:
    """Even an id that leaked cannot be taken while its owner is connected: a node (here a
    raw one, so the test knows its id) keeps getting its heartbeats; the newcomer gets none."""
    daemons.start_session_manager()
    owner_id = b"em:n9:leaked-id"
    with BackendPeer(daemons.backend, owner_id) as owner, daemons.client() as client:
        owner.send(register_message("n9", "inc-n9"))
        registered = owner.wait_for_type({"Registered"}, 10.0)
        assert registered is not None, owner.received
        with BackendPeer(daemons.backend, owner_id) as newcomer:
            # An ipc handshake takes milliseconds: the newcomer is connected long before the
            # owner has heartbeaten and listened through three heartbeat intervals.
            heard = []
            for seq in range(1, 5):
                owner.send({"type": "Heartbeat", "epoch": registered["epoch"], "seq": seq})
                heard += owner.collect(0.4)
            stolen = newcomer.collect(0.5)
        assert stolen == [], f"a connected id was handed over: {stolen[:3]}"
        assert any(m.get("type") == "Heartbeat" for m in heard), heard
        assert node_row(client, "n9")["state"] == "Ready"


def test_another_nodes_key_cannot_take_a_nodes_routing_id_with_curve(daemons: Daemons) -> None:
    """CURVE: a thief holding node n2's key (a compromised node, or any allowed node key) and
    n1's derivable routing id gets none of n1's traffic; n1 stays Ready."""
    keys = Keys(daemons)
    daemons.start_session_manager()
    daemons.start_executor_manager("n1", 1, "--config", str(keys.em_config("n1")))
    with keys.client("alice") as client:
        wait_for("n1 Ready", lambda: node_row(client, "n1").get("state") == "Ready")
        before = node_row(client, "n1")
        routing_id = f"em:n1:{before['incarnation']}".encode()
        with BackendPeer(daemons.backend, routing_id, curve=curve_of(keys.dir, "n2")) as thief:
            stolen = thief.collect(LISTEN)
        assert stolen == [], f"the thief with n2's key got n1's traffic: {stolen[:3]}"
        _assert_untouched(client, before)
