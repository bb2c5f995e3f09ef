"""`SubscribeCluster` through the pure controller: snapshot, coalesced pushes, events, expiry.

Would break if pushes went out every loop turn (unbounded cost at high task rates), if a change
were missed, or if a silent subscriber were kept forever.
"""

from __future__ import annotations

import pytest

from protocol import frontend as fe
from protocol.types import NodeState, TaskState
from tests.unit.core_harness import Harness
from tests.unit.test_controller_flow import cluster

pytestmark = pytest.mark.timeout(30)


def pushes(h: Harness, peer: bytes = b"tui") -> list[fe.ClusterUpdates]:
    return [m for m in h.replies.get(peer, []) if isinstance(m, fe.ClusterUpdates)]


def test_snapshot_then_coalesced_updates_with_sessions_executors_and_events() -> None:
    """The first reply is the whole picture; later pushes carry the changes, a few a second."""
    h = cluster(nodes=2, slots=2)
    snapshot = h.request(fe.SubscribeCluster(interval=0.25), peer=b"tui")
    assert isinstance(snapshot, fe.ClusterSnapshot)
    assert [n.name for n in snapshot.nodes] == ["n1", "n2"]
    assert all(n.state is NodeState.Ready for n in snapshot.nodes)
    assert any("registered" in e.message for e in snapshot.events)
    h.session("s1")
    h.tasks("s1", [b"x"] * 50)
    h.advance(2.0, step=0.05)
    updates = pushes(h)
    assert 2 <= len(updates) <= 2.0 / 0.25 + 1, len(updates)  # coalesced: not one per turn (40 turns)
    assert all(u.request_id == snapshot.request_id for u in updates)
    sessions = {s.id: s for u in updates for s in u.sessions}
    assert sessions["s1"].succeed == 50
    assert sessions["s1"].events == []
    assert {e.id for u in updates for e in u.executors} == set(h.state.executors)
    assert any(u.stats.get("tasks_completed_total") == 50 for u in updates)
    assert any(e.kind == "session" and "created" in e.message for u in updates for e in u.events)


def test_silent_node_is_pushed_unknown_with_its_reason_and_heartbeat_ages() -> None:
    """An operator sees the node go Unknown (state, link, event with the reason) within a push."""
    h = cluster(nodes=2, heartbeat_interval=1.0, heartbeat_liveness=3)
    h.request(fe.SubscribeCluster(), peer=b"tui")
    h.nodes[next(p for p in h.nodes if p.startswith(b"n1"))].online = False
    h.advance(4.0, heartbeat=lambda node: True)
    updates = pushes(h)
    last_n1 = [n for u in updates for n in u.nodes if n.name == "n1"][-1]
    assert last_n1.state is NodeState.Unknown
    assert any(
        e.subject == "n1" and "Unknown" in e.message and "no message" in e.message for u in updates for e in u.events
    )
    assert updates[-1].heartbeat_ages["n1"] > 3.0 > updates[-1].heartbeat_ages["n2"]


def test_keepalive_when_idle_and_subscription_dropped_after_silence() -> None:
    """Idle: about one push a second; a client silent for client_ttl gets nothing more."""
    h = cluster(client_ttl=5.0)
    h.request(fe.SubscribeCluster(), peer=b"tui")
    before = len(pushes(h))
    h.advance(3.0)
    assert 2 <= len(pushes(h)) - before <= 4
    h.advance(6.0)
    assert h.ctl.stats()["subscriptions"] == 0
    count = len(pushes(h))
    h.advance(3.0)
    assert len(pushes(h)) == count


def test_unsubscribe_and_ping_renewal() -> None:
    """Ping keeps a subscription alive past client_ttl; UnsubscribeCluster ends it."""
    h = cluster(client_ttl=2.0)
    h.request(fe.SubscribeCluster(), peer=b"tui")
    for _ in range(4):
        h.advance(1.0)
        h.request(fe.Ping(), peer=b"tui")
    assert h.ctl.stats()["subscriptions"] == 1
    assert isinstance(h.request(fe.UnsubscribeCluster(), peer=b"tui"), fe.Ok)
    assert h.ctl.stats()["subscriptions"] == 0


def test_failed_tasks_make_one_event_per_batch() -> None:
    """Breaks if a failed task makes no event for cluster subscribers, or spoils the other tasks of its batch."""
    h = cluster()
    node = next(iter(h.nodes.values()))
    node.fail_inputs = {b"bad"}
    h.request(fe.SubscribeCluster(), peer=b"tui")
    h.session("s1")
    h.tasks("s1", [b"bad", b"ok"])
    h.advance(1.0)
    assert [t.state for t in h.state.sessions["s1"].tasks][1] is TaskState.Succeed
    assert any(e.kind == "task" and "Failed" in e.message for u in pushes(h) for e in u.events)


def test_drain_is_pushed_with_an_event() -> None:
    """A drained node is pushed with `drained` set and an event saying who did it."""
    h = cluster()
    h.request(fe.SubscribeCluster(), peer=b"tui")
    h.request(fe.DrainNode(name="n1"))
    h.advance(0.5)
    updates = pushes(h)
    assert [n.drained for u in updates for n in u.nodes if n.name == "n1"][-1] is True
    assert any(e.subject == "n1" and e.message.startswith("drained") for u in updates for e in u.events)
