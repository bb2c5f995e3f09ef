"""A saturated backend does not starve clients: a Ping waiting while the backend holds a flood
of node messages is answered after one chunk of them, not after the turn's whole slice."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
import pytest
import zmq

from flamed.core.identity import Sender
from flamed.core.turn import Now
from flamed.session_manager.turns import BACKEND_CHUNK
from flamed.transport import readable
from protocol import backend as be
from protocol.codec import HEADER
from tests.durability.inprocess import InProcess
from tests.support.waiting import wait_for

FLOOD = 5_000


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[InProcess]:
    process = InProcess(tmp_path / "state")
    try:
        yield process
    finally:
        process.cleanup()


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
