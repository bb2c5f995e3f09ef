"""A saturated backend does not starve clients: a Ping waiting while the backend holds a flood
of node messages is answered after one chunk of them, not after the turn's whole slice; a Ping
is answered past the frontend's budget for the turn, up to the first other request; and a Ping
that comes during the flush is answered there, before the fsync, unless its client's reply
waits."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest
import zmq

from flamed.core.identity import Sender
from flamed.core.turn import Now, Outbox
from flamed.session_manager.turns import BACKEND_CHUNK, TurnBudget
from flamed.transport import readable
from protocol import backend as be
from protocol.codec import HEADER
from tests.durability.inprocess import InProcess
from tests.support.daemons import RawClient
from tests.support.waiting import wait_for

FLOOD = 5_000


@pytest.mark.timeout(60)
def test_a_ping_is_answered_after_one_chunk_of_a_flooded_backend(in_process: InProcess) -> None:
    """Breaks if the frontend waited for the backend's whole slice (or its whole socket) before
    being read: with 1,000 nodes under load a client's Ping waited p50 200 ms, p99 700 ms."""
    manager = in_process.start()
    in_process.call({"type": "Ping"})
    client = in_process.client
    assert client is not None
    events: list[str] = []
    handle_nodes = manager.controller.handle_nodes

    def counting(
        messages: list[tuple[bytes, be.NodeMessage]], now: Now, senders: Sequence[Sender] | None = None
    ) -> None:
        events.append(f"{len(messages)} node messages")
        handle_nodes(messages, now, senders)

    manager.controller.handle_nodes = counting  # type: ignore[method-assign]  # counting what is handled when
    node: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    node.setsockopt(zmq.LINGER, 0)
    node.setsockopt(zmq.SNDHWM, 0)  # the whole flood queued at once, whatever the session manager reads
    node.connect(f"ipc://{in_process.dir}/be")
    try:
        for seq in range(1, FLOOD + 1):  # not registered: each one is refused, which is work all the same
            node.send_multipart([HEADER, msgspec.msgpack.encode(be.Heartbeat(epoch=1, seq=seq))])
        wait_for("the flood at the session manager", lambda: readable(manager.backend), timeout=10, interval=0.005)
        ping = client.send({"type": "Ping"})
        wait_for("the Ping at the session manager", lambda: readable(manager.frontend), timeout=10, interval=0.005)
        send = manager.outflow.send

        def watching(peer: bytes, frames: list[bytes], *, push: bool) -> None:
            events.append("reply")
            send(peer, frames, push=push)

        manager.outflow.send = watching  # type: ignore[method-assign]  # where the Pong goes out
        manager.loop.run_once(max_wait=0)
        reply = client.receive()
        assert reply["type"] == "Pong"
        assert reply["request_id"] == ping
        handled = [int(event.split()[0]) for event in events if event != "reply"]
        assert sum(handled) > BACKEND_CHUNK, events  # the flood was there: more than a chunk was read
        before = events[: events.index("reply")]
        assert len(before) <= 1, events[:8]  # at most one chunk of node messages, then the frontend
    finally:
        node.close(0)


@pytest.mark.timeout(60)
def test_past_the_frontend_budget_pings_are_answered_until_another_request(in_process: InProcess) -> None:
    """Breaks if a Ping waited for the next turn once other clients' requests had spent the
    turn's frontend budget (a Ping behind a ListNodes of 1,000 nodes waited 130 ms), or if
    requests past the budget kept being served (a flooding client would own the turn)."""
    manager = in_process.start()
    in_process.call({"type": "Ping"})
    manager._frontend_budget = TurnBudget(-1.0)  # every request spends the turn's budget
    counters = manager.controller.counters
    with RawClient(f"ipc://{in_process.dir}/fe", timeout=10) as other:
        reader = in_process.client
        assert reader is not None

        def read_by_the_manager(client: RawClient, message: dict[str, object]) -> int:
            request_id = client.send(message)
            wait_for(
                "the request at the session manager", lambda: readable(manager.frontend), timeout=10, interval=0.005
            )
            manager._on_frontend()  # one look at the frontend, all within the same loop turn
            return request_id

        stats = read_by_the_manager(reader, {"type": "GetStats"})  # served: the budget is spent
        ping = read_by_the_manager(other, {"type": "Ping"})
        pong = other.receive()  # answered in the turn, without waiting for its end
        assert (pong["type"], pong["request_id"]) == ("Pong", ping)
        served = counters["client_requests"]
        read_by_the_manager(reader, {"type": "GetStats"})  # past the budget: served, then no more
        assert counters["client_requests"] == served + 1
        late_ping = read_by_the_manager(other, {"type": "Ping"})
        assert counters["client_requests"] == served + 1  # left in the socket for the next turn
        manager.loop.run_once(max_wait=0)  # the turn ends: its replies go out
        assert reader.receive()["request_id"] == stats
        for _ in range(500):  # the next turn reads the Ping left in the socket (10 s at most)
            if other.sock.poll(0):
                break
            manager.loop.run_once(max_wait=0.02)
        assert other.receive()["request_id"] == late_ping


@pytest.mark.timeout(60)
def test_a_ping_that_comes_during_the_dispatch_is_answered_before_the_fsync(in_process: InProcess) -> None:
    """Breaks if a Ping that came while the turn dispatched waited for the turn's fsync, its
    sends and the next turn's first chunk of node messages (most Pings came then, under load)."""
    manager = in_process.start()
    in_process.call({"type": "Ping"})
    flush, commit = manager.controller.flush, manager.journal.commit
    pong_before_commit: list[bool] = []
    with RawClient(f"ipc://{in_process.dir}/fe", timeout=10) as other:

        def dispatching(now: Now) -> Outbox:
            if not sent:
                sent.append(other.send({"type": "Ping"}))
                wait_for("the Ping at the session manager", lambda: readable(manager.frontend), timeout=10)
            return flush(now)

        def committing(outbox: Outbox, now: Now) -> Outbox:
            if sent and not pong_before_commit:
                pong_before_commit.append(bool(other.sock.poll(5000)))
            return commit(outbox, now)

        sent: list[int] = []
        manager.controller.flush = dispatching  # type: ignore[method-assign]  # a Ping comes during the dispatch
        manager.journal.commit = committing  # type: ignore[method-assign]  # the durability point
        manager.loop.run_once(max_wait=0)
        assert pong_before_commit == [True]
        reply = other.receive()
        assert (reply["type"], reply["request_id"]) == ("Pong", sent[0])


@pytest.mark.timeout(60)
def test_within_the_flush_a_client_s_ping_waits_for_its_earlier_reply(in_process: InProcess) -> None:
    """Breaks if a Ping read within the flush overtook the same client's reply of the turn (not
    sent before the fsync), or if the request read there were lost rather than kept for the next
    turn (a client may rely on its replies coming in the order of its requests)."""
    manager = in_process.start()
    in_process.call({"type": "Ping"})
    client = in_process.client
    assert client is not None
    flush = manager.controller.flush
    sent: list[int] = []

    def dispatching(now: Now) -> Outbox:
        if len(sent) == 1:  # the turn that served the GetStats: its reply waits for the fsync
            sent.append(client.send({"type": "Ping"}))
            sent.append(client.send({"type": "GetStats"}))
            wait_for("the Ping at the session manager", lambda: readable(manager.frontend), timeout=10)
        return flush(now)

    manager.controller.flush = dispatching  # type: ignore[method-assign]  # requests come during the dispatch
    sent.append(client.send({"type": "GetStats"}))
    replies: list[int] = []
    for _ in range(500):  # until the three replies are there (10 s at most)
        manager.loop.run_once(max_wait=0.02)
        while client.sock.poll(0):
            replies.append(client.receive()["request_id"])
        if len(replies) == 3:
            break
    assert replies == sent
