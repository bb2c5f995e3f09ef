"""Hostile frames against a real session manager: random and mutated messages (wrong tags,
wrong field types, truncated payloads, huge frames, wrong frame counts, odd routing ids) go to
its frontend and its backend; afterwards it must still be running, serve a normal client, and
hold exactly the applications, sessions and tasks it held before (ids, specs, inputs).

What would break: any decode path that raises instead of answering a typed error (the daemon
dies), a huge frame that is buffered instead of dropped (memory), a half-valid message that
changes state it should not (corruption)."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.codec import HEADER, PROTOCOL_VERSION
from tests.integration.daemons import Daemons

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MAX_MESSAGE = 1 << 20  # limits.max_message_size of the session manager under test
BASELINE_SESSION = "fuzz-baseline-session-7f3a91"

NODE = {"name": "fz", "hostname": "fz", "capacity": {"cpu": 1, "memory": 1 << 30}, "max_executors": 1}
FRONTEND_TEMPLATES: list[dict[str, Any]] = [
    {"type": "Hello", "protocol_version": PROTOCOL_VERSION, "client": "fuzz"},
    {"type": "Ping"},
    {"type": "ListSessions"},
    {"type": "ListApplications"},
    {"type": "ListNodes"},
    {"type": "GetStats"},
    {"type": "CreateSession", "session_id": "fz", "spec": {"application": "flmping", "slots": 1}},
    {"type": "OpenSession", "session_id": "fz"},
    {"type": "CreateTasks", "session_id": "fz", "inputs": [b"x", None]},
    {"type": "GetTask", "session_id": "fz", "task_id": 1},
    {"type": "ListTasks", "session_id": "fz", "include_data": True},
    {"type": "WatchTasks", "session_id": "fz", "task_ids": [1, 2]},
    {"type": "CloseSession", "session_id": "fz"},
    {"type": "DeleteSession", "session_id": "fz"},
    {"type": "RegisterApplication", "name": "fz", "spec": {"command": "/bin/true"}},
    {"type": "UnregisterApplication", "name": "fz"},
    {"type": "SubscribeCluster", "interval": 0.5, "events": 5},
    {"type": "UnsubscribeCluster"},
    {"type": "GetNode", "name": "fz"},
]
BACKEND_TEMPLATES: list[dict[str, Any]] = [
    {"type": "RegisterNode", "protocol_version": PROTOCOL_VERSION, "node": NODE, "incarnation": "i1"},
    {"type": "Heartbeat", "epoch": 1, "seq": 1},
    {"type": "Goodbye", "epoch": 1, "seq": 2},
    {
        "type": "Reports",
        "epoch": 1,
        "seq": 1,
        "reports": [
            {"type": "ExecutorCreated", "executor_id": "e1"},
            {
                "type": "TaskCompleted",
                "executor_id": "e1",
                "session_id": "fz",
                "task_id": 1,
                "attempt": 1,
                "state": "Succeed",
                "output": b"o",
            },
        ],
    },
]

NAMES = st.text(alphabet="abcfz-_.é/ \x00", max_size=12).filter(lambda s: "baseline" not in s)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True),
    NAMES,
    st.binary(max_size=64),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(NAMES, inner, max_size=4), max_leaves=12
)


@st.composite
def mutated(draw: st.DrawFn, templates: list[dict[str, Any]]) -> bytes:
    """A valid message of this socket, then a few mutations of its fields and tag."""
    message = dict(draw(st.sampled_from(templates)))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["retype", "drop", "add", "tag", "name"]))
        keys = sorted(message)
        if action == "retype" and keys:
            message[draw(st.sampled_from(keys))] = draw(VALUES)
        elif action == "drop" and keys:
            message.pop(draw(st.sampled_from(keys)))
        elif action == "add":
            message[draw(NAMES)] = draw(VALUES)
        elif action == "tag":
            message["type"] = draw(st.sampled_from([t["type"] for t in FRONTEND_TEMPLATES + BACKEND_TEMPLATES]) | NAMES)
        else:
            for key in ("session_id", "name"):
                if key in message:
                    message[key] = draw(NAMES)
    if draw(st.booleans()):
        message["request_id"] = draw(st.integers(-5, 2**64 - 1) | st.just(1))
    payload = msgspec.msgpack.encode(message)
    if draw(st.integers(0, 9)) == 0:
        payload = payload[: draw(st.integers(0, max(0, len(payload) - 1)))]  # truncated
    return payload


HEADERS = st.one_of(st.just(HEADER), st.just(HEADER), st.just(b"FLM\x09"), st.just(HEADER[:3]), st.binary(max_size=8))


@st.composite
def messages(draw: st.DrawFn, templates: list[dict[str, Any]]) -> list[bytes]:
    """One multipart message: usually header + payload, sometimes the wrong number of frames,
    random bytes, or a frame near or over MAXMSGSIZE."""
    kind = draw(st.integers(0, 19))
    if kind == 0:  # huge: over the limit (the connection is dropped) or just under it
        size = draw(st.sampled_from([MAX_MESSAGE + 1, MAX_MESSAGE - 64, 3 * MAX_MESSAGE]))
        return [HEADER, b"\x91" + b"\xa1" * size]  # not valid MessagePack either
    if kind <= 2:  # wrong frame counts
        return draw(st.lists(st.binary(max_size=32) | st.just(HEADER), min_size=1, max_size=6))
    if kind <= 4:
        return [draw(HEADERS), draw(st.binary(max_size=256))]
    frames = [draw(HEADERS), draw(mutated(templates))]
    if kind == 5:
        frames.append(draw(st.binary(max_size=16)))
    return frames


def snapshot(client: Any) -> dict[str, Any]:
    """What must not change: applications, the baseline session's spec and its tasks' inputs."""
    apps = client.call({"type": "ListApplications"})["applications"]
    session = client.call({"type": "GetSession", "session_id": BASELINE_SESSION})["session"]
    tasks = client.call({"type": "ListTasks", "session_id": BASELINE_SESSION, "include_data": True})["tasks"]
    return {
        "apps": {a["name"]: a for a in apps if a["name"] in ("flmping", "fuzz-base-app")},
        "session": {k: session[k] for k in ("id", "application", "state", "slots", "common_data") if k in session},
        "tasks": [(t["id"], t.get("input"), t["state"]) for t in tasks],
    }


def test_hostile_frames_do_not_crash_or_corrupt_the_session_manager(daemons: Daemons) -> None:
    with daemons.config.open("a") as f:
        f.write(f"[limits]\nmax_message_size = {MAX_MESSAGE}\n")
    sm = daemons.start_session_manager()
    ctx = zmq.Context.instance()
    with daemons.client() as client:
        client.call({"type": "Ping"})
        spec = {"command": "/bin/true", "description": "baseline"}
        assert client.call({"type": "RegisterApplication", "name": "fuzz-base-app", "spec": spec})["type"] != "Error"
        created = client.call(
            {"type": "CreateSession", "session_id": BASELINE_SESSION, "spec": {"application": "fuzz-base-app"}}
        )
        assert created["type"] == "SessionReply", created
        inputs = [b"a", b"", None, bytes(range(256))]
        assert client.call({"type": "CreateTasks", "session_id": BASELINE_SESSION, "inputs": inputs})["type"] == (
            "TasksCreated"
        )
        before = snapshot(client)

    sockets: dict[str, list[zmq.Socket[bytes]]] = {"frontend": [], "backend": []}
    for side, endpoint in (("frontend", daemons.frontend), ("backend", daemons.backend)):
        for i in range(3):
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 10_000)
            if i:
                sock.setsockopt(zmq.ROUTING_ID, b"em:fz:" + bytes([i]) if side == "backend" else bytes([0x41, i]))
            sock.connect(endpoint)
            sockets[side].append(sock)
    sent = {"messages": 0, "frames": 0, "bytes": 0, "dropped_by_hwm": 0, "examples": 0}
    rng = random.Random(7)

    @settings(
        max_examples=1500,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.lists(
            st.one_of(
                st.tuples(st.just("frontend"), messages(FRONTEND_TEMPLATES)),
                st.tuples(st.just("backend"), messages(BACKEND_TEMPLATES)),
            ),
            min_size=1,
            max_size=12,
        )
    )
    def send(batch: list[tuple[str, list[bytes]]]) -> None:
        sent["examples"] += 1
        for side, frames in batch:
            sock = rng.choice(sockets[side])
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                sent["dropped_by_hwm"] += 1
                continue
            sent["messages"] += 1
            sent["frames"] += len(frames)
            sent["bytes"] += sum(len(f) for f in frames)
        for group in sockets.values():  # discard replies so nothing backs up
            for sock in group:
                while sock.poll(0):
                    sock.recv_multipart()

    try:
        send()
        assert sm.poll() is None, f"session manager died:\n{daemons.log('sm')[-3000:]}"
        with daemons.client() as client:
            assert client.call({"type": "Ping"})["type"] == "Pong"
            after = snapshot(client)
            sessions = client.call({"type": "ListSessions"})["sessions"]
            stats = client.call({"type": "GetStats"})["stats"]
        assert after == before
        assert sum(s["id"] == BASELINE_SESSION for s in sessions) == 1
    finally:
        for group in sockets.values():
            for sock in group:
                sock.close(0)
    counted = {k: v for k, v in stats.items() if "bad" in k or "reject" in k or "stale" in k or "refus" in k}
    print(f"fuzz: {sent} sent; session manager alive, state intact; its counters: {counted}")
    assert sm.poll() is None
