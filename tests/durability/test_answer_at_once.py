"""A Ping is answered when it is read, not at the end of the loop turn (after the turn's
records are durable): nothing it says depends on them. A client's own replies keep its order."""

from __future__ import annotations

import pytest

from flamed.core.turn import Now, Outbox
from tests.durability.inprocess import InProcess
from tests.support.daemons import RawClient


@pytest.mark.timeout(60)
def test_a_ping_is_answered_before_its_turn_is_made_durable(in_process: InProcess) -> None:
    """Breaks if a Ping waits for the end of its loop turn (behind other clients' batches,
    nodes' results and the turn's fsync: Pings of 600 ms with 1,000 nodes under load)."""
    manager = in_process.start()
    in_process.call({"type": "Ping"})
    answered = manager.controller.counters["client_answers_at_once"]
    pong_sent_before_commit: list[bool] = []
    commit = manager.journal.commit
    with RawClient(f"ipc://{in_process.dir}/fe", timeout=10) as other:

        def watching(outbox: Outbox, now: Now) -> Outbox:
            if not pong_sent_before_commit and manager.controller.counters["client_answers_at_once"] > answered:
                pong_sent_before_commit.append(bool(other.sock.poll(5000)))  # there before the commit
            return commit(outbox, now)

        manager.journal.commit = watching  # type: ignore[method-assign]  # watching the durability point
        request_id = other.send({"type": "Ping"})
        for _ in range(500):  # until the Pong is there (10 s at most)
            manager.loop.run_once(max_wait=0.02)
            if pong_sent_before_commit or other.sock.poll(0):
                break
        assert pong_sent_before_commit == [True]
        reply = other.receive()
        assert reply["type"] == "Pong"
        assert reply["request_id"] == request_id


@pytest.mark.timeout(60)
def test_a_ping_after_a_write_of_the_same_client_is_answered_after_it(in_process: InProcess) -> None:
    """Breaks if a client's Ping overtook its own earlier request read in the same turn (a
    client may rely on its replies coming in the order of its requests)."""
    manager = in_process.start()
    client = in_process.client
    assert client is not None
    write = client.send({"type": "CreateSession", "session_id": "s1", "spec": {"application": "flmping"}})
    ping = client.send({"type": "Ping"})
    replies: list[int] = []
    while len(replies) < 2:
        manager.loop.run_once(max_wait=0.02)
        while client.sock.poll(0):
            replies.append(client.receive()["request_id"])
    assert replies == [write, ping]
