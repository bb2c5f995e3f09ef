"""The frontend's backlog for clients that do not read (`flamed.session_manager.outflow`), with
a fake socket. What would break: messages to a slow client reordered or lost while it is merely
slow, a client that never reads growing the session manager's memory without a bound, or the
controller never told that a client reads again (its watches would stay silent)."""

from __future__ import annotations

import collections

import pytest

from flamed.core.clients import Flow
from flamed.session_manager.outflow import MESSAGE_OVERHEAD, Outflow

pytestmark = pytest.mark.timeout(10)


class FakeSocket:
    """Takes `room` messages per peer, then refuses until a test lets it read."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.delivered: dict[bytes, list[bytes]] = collections.defaultdict(list)
        self.queued: dict[bytes, int] = collections.defaultdict(int)

    def send(self, frames: list[bytes]) -> bool:
        peer = frames[0]
        if self.queued[peer] >= self.room:
            return False
        self.queued[peer] += 1
        self.delivered[peer].append(frames[-1])
        return True

    def read(self, peer: bytes) -> None:
        self.queued[peer] = 0


def message(peer: bytes, body: bytes) -> list[bytes]:
    return [peer, b"FLM\x01", body]


def test_a_slow_peer_gets_everything_in_order_once_it_reads() -> None:
    """Breaks if the backlog reorders, loses a message, or reports the wrong flow changes."""
    sock = FakeSocket(room=2)
    flow = Outflow(sock.send, max_bytes=1 << 20)
    for i in range(5):
        flow.send(b"slow", message(b"slow", b"%d" % i), push=False)
    flow.send(b"fast", message(b"fast", b"x"), push=False)
    assert flow.take_changes() == {b"slow": Flow.congested}
    assert sock.delivered[b"fast"] == [b"x"]
    assert not flow.retry()
    sock.read(b"slow")
    flow.send(b"slow", message(b"slow", b"5"), push=True)  # joins the backlog, after the rest
    assert flow.retry()
    sock.read(b"slow")
    flow.retry()
    sock.read(b"slow")
    flow.retry()
    assert sock.delivered[b"slow"] == [b"%d" % i for i in range(6)]
    assert flow.take_changes() == {b"slow": Flow.clear}
    assert not flow


def test_replies_past_the_cap_are_dropped_and_counted_but_pushes_are_kept() -> None:
    """Breaks if a client that never reads can make the backlog grow without bound (replies),
    or if a push is lost (a watch's change it no longer holds)."""
    sock = FakeSocket(room=0)
    counters: collections.Counter[str] = collections.Counter()
    cap = 4 * (MESSAGE_OVERHEAD + 100)
    flow = Outflow(sock.send, max_bytes=cap, counters=counters)
    for _ in range(100):
        flow.send(b"p", message(b"p", b"r" * 95), push=False)  # 100 bytes of frames
    assert flow.queued_bytes <= cap
    assert counters["client_replies_dropped"] == 96
    assert flow.take_changes() == {b"p": Flow.full}
    flow.send(b"p", message(b"p", b"push"), push=True)
    assert len(flow.backlogs[b"p"].messages) == 5
    sock.room = 3
    flow.retry()
    assert flow.take_changes() == {b"p": Flow.congested}  # below the cap again: reads answered


def test_tiny_replies_are_bounded_by_their_count_too() -> None:
    """Breaks if the cap counted payload bytes only: a flood of 30-byte Pongs would hold ten
    times the cap in Python objects."""
    flow = Outflow(FakeSocket(room=0).send, max_bytes=64 * 1024)
    for _ in range(100_000):
        flow.send(b"p", message(b"p", b"pong"), push=False)
    assert len(flow.backlogs[b"p"].messages) <= 64 * 1024 // MESSAGE_OVERHEAD


def test_forgetting_a_peer_drops_its_backlog() -> None:
    """Breaks if the backlog of a client the controller forgot (client_ttl) stays forever."""
    flow = Outflow(FakeSocket(room=0).send, max_bytes=1 << 20)
    flow.send(b"gone", message(b"gone", b"x"), push=False)
    flow.take_changes()
    flow.forget(b"gone")
    assert not flow
    assert flow.take_changes() == {}
