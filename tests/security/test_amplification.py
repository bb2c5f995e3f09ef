"""Issue 14, finding 5: one client, within its limits, must not make the session manager hold
or build without bound. A real session manager, raw pyzmq sockets.

What would break: a WatchTasks naming any number of ids, a ListTasks answered with a whole
session in one message, a client that never reads making the session manager queue and build
replies for it (memory, and a loop stall that leaves other clients' Pings unanswered), a slow
client losing its watches the first time a push cannot be delivered, one CURVE key taking
every cluster subscription. Memory figures are in bench/amplification_bench.py, not here."""

from __future__ import annotations

import shutil
import time
from typing import Any

import msgspec
import pytest
import zmq
import zmq.auth

from flamed.cli.flamed import main
from protocol.codec import HEADER
from tests.support.daemons import Daemons, RawClient
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

#: Defaults of the limits under test (flamed/config.py); the tests run with the defaults.
MAX_WATCH_TASK_IDS = 10_000
MAX_PAGE_TASKS = 10_000
MAX_PAGE_BYTES = 1024 * 1024


def session_with_tasks(client: RawClient, session_id: str, inputs: list[bytes | None]) -> None:
    reply = client.call({"type": "CreateSession", "session_id": session_id, "spec": {"application": "flmping"}})
    assert reply["type"] == "SessionReply", reply
    for start in range(0, len(inputs), 50_000):
        batch = inputs[start : start + 50_000]
        reply = client.call({"type": "CreateTasks", "session_id": session_id, "inputs": batch})
        assert reply["type"] == "TasksCreated", reply


def deaf_client(endpoint: str) -> zmq.Socket[bytes]:
    """A client that never reads: its own socket buffers next to nothing (RCVHWM 1)."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.connect(endpoint)
    return sock


def send(sock: zmq.Socket[bytes], message: dict[str, Any]) -> None:
    sock.send_multipart([HEADER, msgspec.msgpack.encode(message)])


def stats(client: RawClient) -> dict[str, float]:
    reply = client.call({"type": "GetStats"})
    assert reply["type"] == "StatsReply", reply
    result: dict[str, float] = reply["stats"]
    return result


def test_an_oversized_watch_is_refused_with_limit_exceeded(daemons: Daemons) -> None:
    """A WatchTasks naming more than limits.max_watch_task_ids ids is refused, naming the key,
    and nothing is pushed; one at the limit is served."""
    daemons.start_session_manager()
    with daemons.client() as client:
        session_with_tasks(client, "w", [None] * (MAX_WATCH_TASK_IDS + 1))
        ids = list(range(1, MAX_WATCH_TASK_IDS + 2))
        reply = client.call({"type": "WatchTasks", "session_id": "w", "task_ids": ids})
        assert reply["type"] == "Error", str(reply)[:300]
        assert reply["code"] == "LimitExceeded", str(reply)[:300]
        assert "limits.max_watch_task_ids" in reply["message"]
        reply = client.call({"type": "WatchTasks", "session_id": "w", "task_ids": ids[:-1]})
        assert reply["type"] == "TaskUpdates"
        assert 0 < len(reply["tasks"]) <= MAX_PAGE_TASKS


def test_a_clients_watched_ids_are_capped_and_another_client_still_watches(daemons: Daemons) -> None:
    """limits.max_watched_tasks_per_client counts every watch of a client; beyond it a watch is
    refused, naming the key, while another client (in plain mode: another connection) is not
    affected."""
    with daemons.config.open("a") as f:
        f.write("[limits]\nmax_watched_tasks_per_client = 100\n")
    daemons.start_session_manager()
    with daemons.client() as first, daemons.client() as second:
        session_with_tasks(first, "w", [None] * 200)
        assert first.call({"type": "WatchTasks", "session_id": "w", "task_ids": list(range(1, 61))})["type"] == (
            "TaskUpdates"
        )
        reply = first.call({"type": "WatchTasks", "session_id": "w", "task_ids": list(range(61, 121))})
        assert reply["type"] == "Error", reply
        assert reply["code"] == "LimitExceeded", reply
        assert "limits.max_watched_tasks_per_client" in reply["message"]
        reply = second.call({"type": "WatchTasks", "session_id": "w", "task_ids": list(range(61, 121))})
        assert reply["type"] == "TaskUpdates", reply


def test_list_tasks_is_paged_and_the_cursor_walks_the_session_exactly_once(daemons: Daemons) -> None:
    """No ListTasks reply exceeds the page maxima (by count, and by bytes unless it is one big
    task), an old request without page fields gets the first page and the cursor, and
    following `next_cursor` yields every task once, in order."""
    daemons.start_session_manager()
    big = b"b" * 300_000
    inputs: list[bytes | None] = [None] * 25_000 + [big] * 8
    with daemons.client() as client:
        session_with_tasks(client, "p", inputs)
        seen: list[int] = []
        request: dict[str, Any] = {"type": "ListTasks", "session_id": "p"}  # as an old client sends it
        while True:
            client.send(request)
            assert client.sock.poll(20_000), "no page within 20 s"
            frames = client.sock.recv_multipart()
            reply = msgspec.msgpack.decode(frames[1])
            assert reply["type"] == "TasksReply", str(reply)[:300]
            assert 1 <= len(reply["tasks"]) <= MAX_PAGE_TASKS
            if len(reply["tasks"]) > 1:
                assert len(frames[1]) <= MAX_PAGE_BYTES
            seen.extend(t["id"] for t in reply["tasks"])
            if not reply.get("next_cursor"):
                break
            request = {"type": "ListTasks", "session_id": "p", "cursor": reply["next_cursor"]}
        assert seen == list(range(1, len(inputs) + 1))


def test_a_client_that_never_reads_does_not_stop_another_clients_ping(daemons: Daemons) -> None:
    """A client that sends many big reads and never reads the replies is answered only until
    its queue is full; then its reads are not even built. Another client's Ping is answered
    all along: within 2 s, where building every reply of the burst takes several seconds (a
    turn serves 50 ms of requests; a Pong takes well under 0.1 s when nothing else runs)."""
    daemons.start_session_manager()
    with daemons.client() as client:
        session_with_tasks(client, "big", [None] * 10_000)
        deaf = deaf_client(daemons.frontend)
        try:
            for round_ in range(2):
                for _ in range(125):
                    send(deaf, {"type": "ListTasks", "session_id": "big"})
                started = time.monotonic()
                client.timeout = 2.0
                assert client.call({"type": "Ping"})["type"] == "Pong", f"round {round_}"
                print(f"round {round_}: Pong after {time.monotonic() - started:.3f} s")
            unanswered = wait_for(
                "reads of the deaf client left unanswered",
                lambda: stats(client).get("client_reads_unanswered_total", 0),
                timeout=30,
            )
            assert unanswered > 0
        finally:
            deaf.close(0)


def test_a_slow_clients_watch_is_kept_until_it_reads_again(daemons: Daemons) -> None:
    """A client that stops reading long enough to fill its queue keeps its watch: the change
    made meanwhile (its tasks Cancelled) is pushed when it reads again, not dropped with the
    watch the first time a push could not be delivered."""
    daemons.start_session_manager()
    with daemons.client() as client:
        session_with_tasks(client, "slow", [None] * 3)
        slow = deaf_client(daemons.frontend)
        try:
            send(slow, {"type": "WatchTasks", "session_id": "slow", "task_ids": [1, 2, 3], "request_id": 7})
            for i in range(120_000):  # far more replies than any queue holds
                send(slow, {"type": "Ping", "request_id": 100 + i})
            wait_for(
                "the slow client's queue to fill",
                lambda: (
                    stats(client).get("client_peers_congested", 0) >= 1
                    and stats(client).get("client_reads_unanswered_total", 0) > 0
                ),
                timeout=60,
            )
            assert client.call({"type": "CloseSession", "session_id": "slow"})["type"] == "SessionReply"
            states: dict[int, str] = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and set(states.values()) != {"Cancelled"}:
                if slow.poll(1000):
                    reply = msgspec.msgpack.decode(slow.recv_multipart()[1])
                    if reply["type"] == "TaskUpdates" and reply["request_id"] == 7:
                        states.update({t["id"]: t["state"] for t in reply["tasks"]})
            assert states == {1: "Cancelled", 2: "Cancelled", 3: "Cancelled"}, states
        finally:
            slow.close(0)


class Keys:
    """CURVE keys from `flamed keygen` for the server and two clients, and the config."""

    def __init__(self, d: Daemons) -> None:
        self.dir = d.dir / "keys"
        for name in ("server", "alice", "bob"):
            assert main(["keygen", "--out", str(self.dir), "--name", name]) == 0
        allowed = d.dir / "allow-clients"
        allowed.mkdir(mode=0o700)
        for name in ("alice", "bob"):
            shutil.copy(self.dir / f"{name}.key", allowed / f"{name}.key")
        nodes = d.dir / "allow-nodes"
        nodes.mkdir(mode=0o700)
        with d.config.open("a") as f:
            f.write(
                f'[security]\ncurve = true\nserver_secret_key = "{self.dir}/server.key_secret"\n'
                f'allow_dir_clients = "{allowed}"\nallow_dir_nodes = "{nodes}"\n'
            )
        self.frontend = d.frontend

    def client(self, name: str) -> RawClient:
        server, _ = zmq.auth.load_certificate(self.dir / "server.key")
        public, secret = zmq.auth.load_certificate(self.dir / f"{name}.key_secret")
        assert secret is not None
        return RawClient(self.frontend, 10.0, curve=(server, public, secret))


def test_one_key_cannot_take_every_cluster_subscription(daemons: Daemons) -> None:
    """With CURVE a key is one client whatever its connections: past
    limits.max_subscriptions_per_client (5) its subscriptions are refused, naming the key,
    and another key's dashboard still subscribes."""
    keys = Keys(daemons)
    daemons.start_session_manager()
    clients = [keys.client("alice") for _ in range(6)]
    try:
        replies = [c.call({"type": "SubscribeCluster"}) for c in clients]
        assert [r["type"] for r in replies] == ["ClusterSnapshot"] * 5 + ["Error"], replies[-1]
        assert replies[-1]["code"] == "LimitExceeded"
        assert "limits.max_subscriptions_per_client" in replies[-1]["message"]
        with keys.client("bob") as bob:
            assert bob.call({"type": "SubscribeCluster"})["type"] == "ClusterSnapshot"
    finally:
        for c in clients:
            c.sock.close(0)
