"""Who may speak for a node (DESIGN 6a), through the pure controller: the executor manager's
secret, the CURVE key of a link, and what a registration that proves nothing may keep.

What would break: a registration that knows only the public incarnation taken for the executor
manager coming back (it would get the snapshot: task inputs, common data; and could complete
tasks); the secret's hash lost at a restart (a forger then wins the node loaded as Unknown); a
new executor manager keeping executors it merely listed; a connection speaking for a second
node; with CURVE, a link answering to a key other than the one that registered it, or still
sent commands after its key was revoked; the secret or its hash shown to clients.
"""

from __future__ import annotations

import msgspec
import pytest

from flamed.core import records as r
from flamed.core.controller import Controller
from flamed.core.identity import PLAIN, Sender, same_process, secret_hash
from flamed.core.snapshot import decode_state, encode_state
from flamed.core.state import ClusterState
from protocol import backend as be
from protocol import frontend as fe
from protocol.errors import ErrorCode
from protocol.types import ApplicationSpec, NodeState, TaskState
from tests.unit.core_harness import FakeNode, Harness

pytestmark = pytest.mark.timeout(30)

SECRET = "secret-of-the-n1-process"
N1_KEY, N2_KEY = "K" * 40, "L" * 40


def cluster() -> tuple[Harness, FakeNode, list[int]]:
    """n1 registered with SECRET, holding two Running tasks of session s1."""
    h = Harness(heartbeat_interval=1.0, heartbeat_liveness=3, drain_timeout=5.0)
    h.request(fe.RegisterApplication(name="flmping", spec=ApplicationSpec(command="true")))
    node = FakeNode("n1", 2, auto_run=False)
    register(h, node, SECRET)
    h.session("s1")
    ids = h.tasks("s1", [b"input-1", b"input-2"])
    h.advance(0.5)
    assert {t.state for t in h.state.sessions["s1"].tasks} == {TaskState.Running}
    return h, node, ids


def register(
    h: Harness, node: FakeNode, secret: str = "", sender: Sender = PLAIN, executors: list[str] | None = None
) -> None:
    message = msgspec.structs.replace(node.register_message(), secret=secret)
    if executors is not None:
        message.executors = executors
    h.nodes[node.peer] = node
    h.ctl.handle_node(node.peer, message, h.now(), sender)
    h.pump()


def impostor_of(node: FakeNode, incarnation: str | None = None) -> FakeNode:
    """Another connection that names `node` (and, by default, its public incarnation)."""
    other = FakeNode(node.name, node.slots, incarnation=incarnation or node.incarnation, auto_run=False)
    other.peer = b"impostor"
    return other


def test_the_secret_is_kept_only_as_a_hash_and_the_hash_is_checked() -> None:
    """Breaks if a node's secret is stored as itself, or a wrong or empty secret, or another incarnation,
    passes for the same process."""
    h, node, _ = cluster()
    entry = h.state.nodes["n1"]
    assert entry.secret_hash == secret_hash(SECRET) != SECRET
    assert len(entry.secret_hash) == 64
    assert same_process(entry, node.incarnation, SECRET)
    assert not same_process(entry, node.incarnation, "guess")
    assert not same_process(entry, node.incarnation, "")
    assert not same_process(entry, "another incarnation", SECRET)
    assert secret_hash("") == ""


def test_a_registration_with_the_public_incarnation_but_no_secret_is_refused() -> None:
    """Connected or Draining within its drain: refused, nothing changes, nothing is sent but
    the refusal; the holder goes on."""
    h, node, _ = cluster()
    epoch = h.state.nodes["n1"].epoch
    for state in (NodeState.Ready, NodeState.Unknown):
        if state is NodeState.Unknown:
            h.advance(3.5, heartbeat=lambda n: False)  # silent: Draining, within its 5 s drain
        assert h.state.nodes["n1"].state is state
        impostor = impostor_of(node)
        register(h, impostor, "guess", executors=sorted(node.executors))
        assert not impostor.registered
        assert [e.code for e in impostor.errors] == [ErrorCode.Unauthorized]
        assert h.state.nodes["n1"].epoch == epoch
        assert h.link("n1").peer == node.peer
    assert h.ctl.counters["node_impersonations_refused"] == 2
    assert {t.state for t in h.state.sessions["s1"].tasks} == {TaskState.Running}


def test_the_same_executor_manager_on_a_new_connection_keeps_its_executors() -> None:
    """The executor manager opens a new connection (new routing id) at each registration: with
    its secret it is the same process, keeps its executors and gets them in the snapshot."""
    h, node, _ = cluster()
    held = sorted(node.executors)
    del h.nodes[node.peer]
    node.peer = b"n1/new-connection"
    register(h, node, SECRET)
    assert [sorted(a.executor_id for a in node.registered[-1].executors)] == [held]
    assert h.link("n1").peer == b"n1/new-connection"
    assert h.ctl.registered_as(b"n1/inc-1") is None
    assert {t.state for t in h.state.sessions["s1"].tasks} == {TaskState.Running}


def test_a_new_incarnation_after_the_holder_fell_silent_keeps_nothing_it_lists() -> None:
    """It is taken as a restarted executor manager (RFE384: clean up, retry), whatever executor
    ids it copied from ListExecutors: its snapshot carries no task, no input."""
    h, node, ids = cluster()
    h.advance(2.5, heartbeat=lambda n: False)  # quiet for over two heartbeat intervals
    restarted = impostor_of(node, incarnation="inc-2")
    register(h, restarted, "another secret", executors=sorted(node.executors))
    (snapshot,) = restarted.registered
    assert snapshot.executors == []
    assert b"input" not in msgspec.msgpack.encode(snapshot)
    tasks = h.state.sessions["s1"].tasks
    assert [t.retry_count for t in tasks] == [1] * len(ids)  # retried (and dispatched again)


def test_a_restarted_session_manager_checks_the_secret_of_the_node_that_comes_back() -> None:
    """The hash survives a restart, from the log (records replayed) and from a snapshot: the
    forger is refused, the executor manager with its secret keeps its tasks (RFE384 row 4)."""
    h, node, _ = cluster()
    replayed = ClusterState()
    for record in h.records:
        replayed.apply(record)  # type: ignore[arg-type]  # Harness.records holds the outbox's records as object
    for state in (replayed, decode_state(encode_state(h.state))):
        assert state.nodes["n1"].secret_hash == secret_hash(SECRET)
    h.ctl = Controller(h.ctl.config, decode_state(encode_state(h.state)), new_id=h.ctl.new_id)
    h.ctl.start(h.now())
    impostor = impostor_of(node)
    register(h, impostor, "guess", executors=sorted(node.executors))
    goodbye = be.Goodbye(epoch=node.epoch, seq=node.seq + 1, incarnation=node.incarnation, secret="guess")
    h.ctl.handle_node(impostor.peer, goodbye, h.now())
    h.pump()
    assert not impostor.registered
    assert [e.code for e in impostor.errors] == [ErrorCode.Unauthorized] * 2
    assert h.state.nodes["n1"].state is NodeState.Unknown
    register(h, node, SECRET)
    assert len(node.registered[-1].executors) == 2
    assert {t.state for t in h.state.sessions["s1"].tasks} == {TaskState.Running}
    assert h.ctl.counters["node_impersonations_refused"] == 2


def test_a_goodbye_with_the_secret_after_a_restart_cleans_the_node_up() -> None:
    """Breaks if a restarted session manager ignores a node's Goodbye that carries the right secret (the node
    would wait out the drain)."""
    h, node, _ = cluster()
    h.ctl = Controller(h.ctl.config, h.state, new_id=h.ctl.new_id)
    h.ctl.start(h.now())
    goodbye = be.Goodbye(epoch=node.epoch, seq=node.seq + 1, incarnation=node.incarnation, secret=SECRET)
    h.ctl.handle_node(b"n1/last-connection", goodbye, h.now())
    h.pump()
    assert h.state.nodes["n1"].state is NodeState.NotReady


def test_an_older_executor_manager_without_a_secret_is_known_by_its_incarnation() -> None:
    """Upgrades: a node registered without a secret (hash "") comes back by incarnation, as
    before secrets existed."""
    h = Harness()
    node = FakeNode("n1", 2)
    register(h, node)
    assert h.state.nodes["n1"].secret_hash == ""
    node.peer = b"n1/second-connection"
    register(h, node)
    assert len(node.registered) == 2
    assert not node.errors


def test_a_connection_registered_as_one_node_cannot_register_another() -> None:
    """Breaks if one connection, registered as n1, can also register n2 (it must be Unauthorized)."""
    h, node, _ = cluster()
    other = FakeNode("n2", 2)
    other.peer = node.peer
    h.ctl.handle_node(node.peer, msgspec.structs.replace(other.register_message(), secret="x"), h.now())
    outbox = h.ctl.flush(h.now())
    assert [m.code for _, m in outbox.node_messages if isinstance(m, be.Error)] == [ErrorCode.Unauthorized]
    assert "n2" not in h.state.nodes


def test_curve_a_link_answers_only_to_the_key_that_registered_it_and_stops_when_it_is_revoked() -> None:
    """Breaks if a node's link takes messages signed by another CURVE key, or keeps sending to a node whose key
    was revoked."""
    h = Harness(heartbeat_interval=1.0, heartbeat_liveness=3, drain_timeout=5.0)
    n1 = FakeNode("n1", 2)
    register(h, n1, "s", sender=Sender(N2_KEY, "n2"))  # n2's key claims n1
    assert not n1.registered
    assert n1.errors[-1].code is ErrorCode.Unauthorized
    register(h, n1, "s", sender=Sender(N1_KEY, "n1"))
    assert n1.registered
    assert h.link("n1").key == N1_KEY
    beat = be.Heartbeat(epoch=n1.epoch, seq=1)
    for sender in (Sender(N2_KEY, "n2"), Sender("M" * 40, "n1"), PLAIN):  # another node; n1.key replaced
        h.ctl.handle_node(n1.peer, beat, h.now(), sender)
    h.pump()
    assert [e.code for e in n1.errors[-3:]] == [ErrorCode.Unauthorized] * 3
    assert h.link("n1").recv_seq == 0
    assert h.ctl.counters["node_key_mismatches"] == 4
    h.ctl.handle_node(n1.peer, beat, h.now(), Sender(N1_KEY, "n1"))
    assert h.link("n1").recv_seq == 1
    h.ctl.keys_changed(lambda key, node: key == N1_KEY and node == "n2", h.now())  # n1.key now names n2
    assert h.state.nodes["n1"].state is NodeState.Unknown
    h.ctl.links.send("n1", be.ReleaseExecutor(executor_id="e1"))
    h.t += 2.0
    assert not [m for peer, m in h.ctl.flush(h.now()).node_messages if peer == n1.peer]


def test_clients_never_see_the_secret_or_its_hash() -> None:
    """Breaks if ListNodes, GetNode or a cluster subscription leaks a node's secret or its hash to a client."""
    h, _, _ = cluster()
    hashed = secret_hash(SECRET).encode()
    for request in (fe.ListNodes(), fe.GetNode(name="n1"), fe.SubscribeCluster()):
        payload = msgspec.msgpack.encode(h.request(request))
        assert SECRET.encode() not in payload, request
        assert hashed not in payload, request


def test_the_hash_is_a_new_field_with_a_default_in_records_and_snapshots() -> None:
    """Logs and snapshots written before secrets existed still load (hash "")."""
    record = r.NodeRegistered(time=1, info=FakeNode("n1").info(), incarnation="i", epoch=1)
    encoded = msgspec.msgpack.encode(record)
    assert msgspec.msgpack.decode(encoded, type=r.NodeRegistered).secret_hash == ""
    assert b"secret" not in encoded


def test_a_flood_of_forged_registrations_is_each_refused_and_counted_but_logged_once_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Breaks if a forger can fill the session manager's disk with one warning per message."""
    h, node, _ = cluster()
    impostor = impostor_of(node)
    h.nodes[impostor.peer] = impostor
    forged = msgspec.structs.replace(impostor.register_message(), secret="guess")
    with caplog.at_level("WARNING", logger="flamed.session_manager"):
        for _ in range(100):
            h.ctl.handle_node(impostor.peer, forged, h.now())
        h.t += 1.5
        h.ctl.handle_node(impostor.peer, forged, h.now())
        h.pump()
    assert len(impostor.errors) == 101
    assert h.ctl.counters["node_impersonations_refused"] == 101
    lines = [r.getMessage() for r in caplog.records if "refused RegisterNode" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "(99 more refused since the last such line)" in lines[1], lines
