"""`ClusterFeed` (the dashboard's subscription in the SDK) against a fake session manager, and
its liveness rules with a fake clock.

What would break: a feed that keeps saying "connected" while nothing comes (flame-tui showed
stale rows as live for as long as the session manager was away), one that never asks for its
subscription again when the session manager is back, a subscription lost because nothing
answered at first, or a watch that doubles instead of replacing the last one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flamed.client import ClusterFeed
from flamed.client.cluster_feed import Connected, Disconnected, FeedItem, Liveness, Notice
from protocol import frontend as fe
from protocol.types import ConnectionState, Node, NodeState, ResourceRequirement
from tests.client.fake_sm import FakeSessionManager
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(30)


class Items:
    """What a feed delivered, for the test thread to wait on."""

    def __init__(self) -> None:
        self.items: list[FeedItem] = []
        self.batches = 0
        self._lock = threading.Lock()

    def __call__(self, items: list[FeedItem]) -> None:
        with self._lock:
            self.items.extend(items)
            self.batches += 1

    def of(self, kind: type) -> list[object]:
        with self._lock:
            return [i for i in self.items if isinstance(i, kind)]


def is_up(live: Liveness) -> bool:
    """`live.up`, read through a call: a type checker would carry an earlier `assert live.up` over
    the calls that change it."""
    return live.up


def node(name: str) -> Node:
    return Node(
        name=name,
        hostname=name,
        state=NodeState.Ready,
        connection=ConnectionState.Connected,
        capacity=ResourceRequirement(),
        allocatable=ResourceRequirement(),
        max_executors=1,
    )


def snapshot(request: fe.SubscribeCluster) -> list[fe.Message]:
    return [fe.ClusterSnapshot(nodes=[node("n1")], executors=[], sessions=[])]


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "flame.toml"
    path.write_text("[client]\nconnect_timeout = 0.5\ntimeout = 5.0\n")
    return str(path)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeSessionManager]:
    server = FakeSessionManager(f"ipc://{tmp_path}/sm")
    server.handlers[fe.SubscribeCluster] = snapshot
    yield server
    server.stop()


def test_a_silent_subscription_is_reported_lost_and_asked_for_again_under_its_id(
    fake: FakeSessionManager, config: str
) -> None:
    """The fake answers each SubscribeCluster with one snapshot and then says nothing (as a
    frozen session manager would): the feed says Disconnected within `silence`, sends the
    subscription again under the same request id, and says Connected when the answer comes."""
    items = Items()
    feed = ClusterFeed(fake.endpoint, config=config, silence=0.5, min_gap=0.05)
    feed.start(items)
    try:
        wait_for("a first snapshot", lambda: items.of(fe.ClusterSnapshot), timeout=5)
        wait_for("the loss", lambda: items.of(Disconnected), timeout=5)
        lost = items.of(Disconnected)[0]
        assert isinstance(lost, Disconnected), lost
        assert lost.reason.startswith("no message for "), lost
        wait_for("a second snapshot", lambda: len(items.of(fe.ClusterSnapshot)) >= 2, timeout=5)
        subscriptions = fake.of_type(fe.SubscribeCluster)
        assert len({s.request_id for s in subscriptions}) == 1, subscriptions
        kinds = [type(i).__name__ for i in items.items if not isinstance(i, Notice)]
        first_loss = kinds.index("Disconnected")
        assert "Connected" in kinds[:first_loss], kinds
        assert "Connected" in kinds[first_loss:], kinds
        connected = items.of(Connected)[-1]
        assert isinstance(connected, Connected), connected
        assert connected.server_version == "fake", connected
    finally:
        feed.stop()


def test_a_feed_started_before_its_session_manager_says_why_and_follows_it_when_it_comes(
    tmp_path: Path, config: str
) -> None:
    """Nothing answers at first: the feed says so (the SDK's "nothing answers at" line), keeps
    its subscription waiting, and delivers the snapshot once a session manager binds there."""
    endpoint = f"ipc://{tmp_path}/later"
    items = Items()
    feed = ClusterFeed(endpoint, config=config, silence=0.5, min_gap=0.05)
    feed.start(items)
    server = None
    try:
        wait_for("the first-contact failure", lambda: items.of(Disconnected), timeout=5)
        reason = items.of(Disconnected)[0]
        assert isinstance(reason, Disconnected), reason
        assert f"nothing answers at {endpoint}" in reason.reason, reason
        server = FakeSessionManager(endpoint)
        server.handlers[fe.SubscribeCluster] = snapshot
        wait_for("the snapshot", lambda: items.of(fe.ClusterSnapshot), timeout=10)
        wait_for("Connected", lambda: items.of(Connected), timeout=5)
    finally:
        feed.stop()
        if server is not None:
            server.stop()


def test_watching_another_session_replaces_the_watch_and_actions_say_how_they_went(
    fake: FakeSessionManager, config: str
) -> None:
    """One whole-session watch at a time, always under the same request id (the session
    manager replaces it), without task data; close and drain answer with a Notice each."""
    fake.handlers[fe.WatchTasks] = lambda r: [fe.TaskUpdates(tasks=[])]
    fake.handlers[fe.DrainNode] = lambda r: [fe.NodeReply(node=node(r.name))]
    items = Items()
    feed = ClusterFeed(fake.endpoint, config=config, min_gap=0.05)
    feed.start(items)
    try:
        wait_for("a snapshot", lambda: items.of(fe.ClusterSnapshot), timeout=5)
        feed.watch_session("s1")
        feed.watch_session("s2")
        wait_for("two watches", lambda: len(fake.of_type(fe.WatchTasks)) == 2, timeout=5)
        first, second = fake.of_type(fe.WatchTasks)
        assert (first.session_id, second.session_id) == ("s1", "s2")
        assert first.request_id == second.request_id
        assert not first.task_ids
        assert not first.include_data
        wait_for("the pushes", lambda: len(items.of(fe.TaskUpdates)) == 2, timeout=5)
        feed.close_session("s1")
        feed.drain_node("n1", True)
        wait_for("two notices", lambda: len(items.of(Notice)) == 2, timeout=5)
        notices = sorted(n.message for n in items.of(Notice))  # type: ignore[attr-defined]  # items.of() returns the feed items as object
        assert notices == ["close session s1: Closed", "drain node n1: not drained"], notices
    finally:
        feed.stop()


def test_liveness_loses_after_silence_asks_again_every_silence_and_recovers_on_data() -> None:
    """The rules of `Liveness`, with time as an argument: not lost before `silence` has
    passed, lost once (not at every check), asked again every `silence` while lost, and live
    again on the first message."""
    live = Liveness(silence=3.0)
    live.started(0.0)
    assert live.check(2.0) == (None, False)
    assert live.check(3.0) == (None, True)  # nothing yet: ask again
    assert live.heard_at(3.5) is True
    assert live.heard_at(4.0) is False
    assert live.check(7.0) == (None, False)
    silent, ask = live.check(7.5)
    assert silent == pytest.approx(3.5)
    assert ask
    assert live.check(8.0) == (None, False)
    assert live.check(10.5) == (None, True)
    assert live.next_check() == pytest.approx(13.5)
    assert live.heard_at(11.0) is True
    assert is_up(live)
    live.refused(12.0)
    assert not is_up(live)
    assert live.check(15.0) == (None, True)
