"""Issue 14, finding 1: one frame nested 1,000 levels deep (1 KB) raised RecursionError out of the
codec and killed the session manager; the same on every other decode path. Each test sends such
frames over a real socket to a real receiver and checks that it answers or drops them, and keeps
serving."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from flamed.client import FlameError
from flamed.client.io_thread import IoThread
from protocol import backend as be
from protocol import frontend as fe
from protocol import instance as im
from protocol.codec import HEADER, client_request_codec, encode, instance_message_codec
from protocol.types import TaskState
from tests.em.contexts import RESREQ, SERVICES, bind, completed, new_id, of_type, probe_app, session, tasks
from tests.support.daemons import REPO, Daemons, ExecutorManagerProcess
from tests.support.fake_backend import FakeSessionManager
from tests.support.waiting import wait_for
from tui.feed import Disconnected, FeedItem, LiveFeed

pytestmark = pytest.mark.timeout(90)

#: The frame of the finding, and the same nest before the tag and 100,000 levels deep.
DEEP_PAYLOADS = [
    b"\x82\xa4type\xa4Ping\xa4junk" + b"\x91" * 1000 + b"\xc0",
    b"\x82\xa4junk" + b"\x91" * 1000 + b"\xc0" + b"\xa4type\xa4Ping",
    b"\x82\xa4type\xa4Ping\xa4junk" + b"\xdd\x00\x00\x00\x01" * 100_000 + b"\xc0",
]


def dealer(endpoint: str, routing_id: bytes | None = None) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if routing_id is not None:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.connect(endpoint)
    return sock


def router(endpoint: str) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(endpoint)
    return sock


def receive(sock: zmq.Socket[bytes], timeout: float = 20.0) -> list[bytes]:
    assert sock.poll(int(timeout * 1000)), "nothing arrived"
    return sock.recv_multipart()


@pytest.mark.integration
def test_the_session_manager_answers_deep_frames_on_its_frontend(daemons: Daemons) -> None:
    """Each deep frame gets Error(BadMessage) saying why; the session manager lives and serves."""
    sm_process = daemons.start_session_manager()
    with daemons.client() as client:
        client.call({"type": "Ping"})
        for payload in DEEP_PAYLOADS:
            client.send_frames([HEADER, payload])
            reply = client.receive()
            assert (reply["type"], reply["code"]) == ("Error", "BadMessage"), reply
            assert "nested deeper than 128 levels" in reply["message"]
        assert client.call({"type": "Ping"})["type"] == "Pong"
    assert sm_process.poll() is None


@pytest.mark.integration
def test_the_session_manager_drops_deep_frames_on_its_backend(cluster: Daemons) -> None:
    """Deep frames from a peer on the backend (no key needed in plain mode): refused, the
    session manager lives, its node stays Ready and runs a task."""
    peer = dealer(cluster.backend, b"em:x:" + os.urandom(8).hex().encode())
    try:
        for payload in DEEP_PAYLOADS:
            peer.send_multipart([HEADER, payload])
        assert msgspec.msgpack.decode(receive(peer)[1])["type"] == "Error"  # told to register
    finally:
        peer.close(0)
    with cluster.client() as client:
        nodes = client.call({"type": "ListNodes"})["nodes"]
        assert [(n["name"], n["state"]) for n in nodes] == [("n1", "Ready")]
        client.call({"type": "CreateSession", "session_id": "deep", "spec": {"application": "flmping"}})
        assert client.call({"type": "CreateTasks", "session_id": "deep", "inputs": [b"x"]})["type"] == "TasksCreated"

        def finished() -> dict[str, object] | None:
            task = client.call({"type": "GetTask", "session_id": "deep", "task_id": 1})["task"]
            return task if task["state"] == "Succeed" else None

        wait_for("the task", finished)
    assert cluster.alive("sm")
    assert cluster.alive("n1")


@pytest.mark.integration
def test_the_executor_manager_drops_deep_frames_from_the_session_manager(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """The executor manager's backend: deep frames are dropped, the link goes on."""
    sm.register()
    for payload in DEEP_PAYLOADS:
        sm.sock.send_multipart([sm.peer, HEADER, payload])
    executor_id = new_id()
    sm.command(be.CreateExecutor(executor_id=executor_id, resreq=RESREQ))
    sm.wait_reports("ExecutorCreated", lambda rs: of_type(be.ExecutorCreated, rs))
    assert em.process.poll() is None


@pytest.mark.integration
def test_the_executor_manager_drops_deep_frames_from_a_stranger_on_its_instance_socket(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """A local process that is no instance of ours (here: the test) sends deep frames and garbage
    to the instance socket, under a routing id of its own and under an instance's: all dropped
    (nobody to blame, nobody killed), and the instance there keeps running its tasks."""
    sm.register()
    executor_id = new_id()
    bind(sm, executor_id, "s1", probe_app())
    socket_path = em.runtime_dir / f"n1-{em.process.pid}.sock"  # node.instance_socket_path in its process
    assert socket_path.exists()
    stranger = dealer(f"ipc://{socket_path}", executor_id.encode())
    try:
        for payload in [*DEEP_PAYLOADS, b"\xc1", msgspec.msgpack.encode({"type": "TaskResults", "results": []})]:
            stranger.send_multipart([HEADER, payload])
        sm.command(be.LaunchTasks(executor_id=executor_id, session_id="s1", tasks=tasks([b"a", b"b"])))
        done = sm.wait_reports("2 completions", lambda rs: len(completed(rs)) == 2 and completed(rs))
    finally:
        stranger.close(0)
    assert [(c.task_id, c.state, c.output) for c in done] == [
        (1, TaskState.Succeed, b"a"),
        (2, TaskState.Succeed, b"b"),
    ]
    assert em.process.poll() is None


@pytest.mark.integration
def test_an_instance_skips_deep_frames_from_its_executor_manager(tmp_path: Path) -> None:
    """The instance side (flamed.service.run): the test plays the executor manager, sends deep
    frames before and between the commands, and the instance serves the session to the end."""
    endpoint = f"ipc://{tmp_path}/instances.sock"
    sock = router(endpoint)
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        FLAME_INSTANCE_ENDPOINT=endpoint,
        FLAME_EXECUTOR_ID="e1",
        FLAME_INSTANCE_TOKEN="i-test-token",
    )
    process = subprocess.Popen([sys.executable, str(SERVICES / "probe_service.py")], env=env, cwd=tmp_path)
    decode = instance_message_codec().decode
    try:
        token, *frames = receive(sock)
        assert token == b"i-test-token"
        assert isinstance(decode(frames), im.InstanceReady)
        for payload in DEEP_PAYLOADS:
            sock.send_multipart([token, HEADER, payload])
        enter = im.EnterSession(session=session("s1"), application=probe_app())
        sock.send_multipart([token, *encode(enter)])
        assert decode(receive(sock)[1:]) == im.SessionEntered(ok=True)
        for payload in DEEP_PAYLOADS:
            sock.send_multipart([token, HEADER, payload])
        sock.send_multipart([token, *encode(im.InvokeTasks(tasks=tasks([b"still here"])))])
        results = decode(receive(sock)[1:])
        assert isinstance(results, im.TaskResults)
        assert results.results[0].output == b"still here"
        sock.send_multipart([token, *encode(im.LeaveSession())])
        assert isinstance(decode(receive(sock)[1:]), im.SessionLeft)
        assert process.wait(20) == 0
    finally:
        process.kill()
        process.wait()
        sock.close(0)


def test_the_sdk_skips_deep_frames_and_a_wrong_task_id_count(tmp_path: Path) -> None:
    """The SDK's I/O thread (flamed.client): deep frames from its session manager are skipped,
    and a TasksCreated with fewer ids than inputs fails that batch only; the connection goes on.
    Before, either killed the thread and every call on the connection failed."""
    endpoint = f"ipc://{tmp_path}/sm"
    server = router(endpoint)
    io = IoThread(endpoint, timeout=10)
    requests = client_request_codec()
    try:
        pong = io.call(fe.Ping())
        peer, *frames = receive(server)
        ping = requests.decode(frames)
        for payload in DEEP_PAYLOADS:
            server.send_multipart([peer, HEADER, payload])
        server.send_multipart([peer, *encode(fe.Pong(request_id=ping.request_id))])
        assert isinstance(pong.result(10), fe.Pong)

        runs: list[Future[Any]] = [Future(), Future()]  # as Session.run hands them in
        created = io.create_tasks("s1", [b"a", b"b"], sinks=list(runs))
        create = requests.decode(receive(server)[1:])
        assert isinstance(create, fe.CreateTasks)
        reply = fe.TasksCreated(session_id="s1", task_ids=[1], request_id=create.request_id)
        server.send_multipart([peer, *encode(reply)])
        for future in (created, *runs):
            with pytest.raises(FlameError, match="1 task ids for 2 inputs"):
                future.result(10)

        again = io.call(fe.Ping())
        ping = requests.decode(receive(server)[1:])
        server.send_multipart([peer, *encode(fe.Pong(request_id=ping.request_id))])
        assert isinstance(again.result(10), fe.Pong)
    finally:
        io.close()
        server.close(0)


def test_the_dashboard_feed_skips_deep_frames_and_goes_on(tmp_path: Path) -> None:
    """flame-tui's feed (the SDK's ClusterFeed, on the SDK's I/O thread): deep frames from the
    session manager are skipped like any bad frame and the subscription goes on: the snapshot
    that follows them is delivered. Before, RecursionError ended the feed's thread and the
    dashboard froze for good."""
    endpoint = f"ipc://{tmp_path}/sm"
    server = router(endpoint)
    items: queue.Queue[FeedItem] = queue.Queue()
    feed = LiveFeed(endpoint, silence=30.0)

    def collect(batch: list[FeedItem]) -> None:
        for item in batch:
            items.put(item)

    feed.start(collect)
    try:
        requests = client_request_codec()
        subscription = None
        while subscription is None:
            peer, *frames = receive(server)
            message = requests.decode(frames)
            if isinstance(message, fe.SubscribeCluster):
                subscription = message
        for payload in DEEP_PAYLOADS:
            server.send_multipart([peer, HEADER, payload])
        snapshot = fe.ClusterSnapshot(request_id=subscription.request_id, nodes=[], executors=[], sessions=[])
        server.send_multipart([peer, *encode(snapshot)])
        delivered: list[FeedItem] = []
        while not any(isinstance(item, fe.ClusterSnapshot) for item in delivered):
            delivered.append(items.get(timeout=20))
        assert not any(isinstance(item, Disconnected) for item in delivered), delivered
    finally:
        feed.stop()
        server.close(0)
