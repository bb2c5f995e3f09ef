"""Hostile frames against real daemons over raw pyzmq sockets: after each run the daemons must
still be running and serving, and hold exactly what they held before.

Two generators. Hypothesis mutates valid messages of the session manager's frontend and backend
(wrong tags, wrong field types, truncated payloads, huge frames, wrong frame counts, odd routing
ids). `HostileFrames` (hostile_frames.py, fast and seeded; bench/fuzz_soak.py sends a million)
adds deep nesting, headers claiming GiBs, every MessagePack type, and covers the executor
manager's instance socket too: from a process that is no instance, and from real instances that
send its frames under their own token (each is then killed, the node goes on).

What would break: any decode path that raises instead of answering or dropping (the daemon
dies), a huge frame or a huge declared length that is buffered instead of refused (memory), a
half-valid message that changes state it should not (corruption), an instance's bad frame that
takes its node down."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.codec import HEADER
from tests.security import fuzzing
from tests.security.hostile_frames import BACKEND as BACKEND_TEMPLATES
from tests.security.hostile_frames import FRONTEND as FRONTEND_TEMPLATES
from tests.security.hostile_frames import HostileFrames
from tests.support.daemons import Daemons
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MAX_MESSAGE = 1 << 20  # limits.max_message_size of the daemons under test
BASELINE_SESSION = fuzzing.BASELINE_SESSION

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


def test_hypothesis_frames_do_not_crash_or_corrupt_the_session_manager(daemons: Daemons) -> None:
    """Hypothesis' mutations of valid frontend and backend messages, 600 batches of up to 12:
    the session manager lives, answers, and its baseline is unchanged."""
    with daemons.config.open("a") as f:
        f.write(f"[limits]\nmax_message_size = {MAX_MESSAGE}\n")
    sm = daemons.start_session_manager()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    with daemons.client() as client:
        fuzzing.prepare(client)
        before = fuzzing.snapshot(client, [])

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
        max_examples=600,
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
            after = fuzzing.snapshot(client, [])
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


#: Messages of HostileFrames per door in CI (the soak sends a million: bench/fuzz_soak.py).
CI_FRAMES = {"frontend": 3000, "backend": 3000, "instance": 2000}
#: Messages sent by real instances, under their own token (each costs an instance start).
CI_FROM_INSTANCES = 4


def test_hostile_frames_on_every_door_leave_the_cluster_up_and_unchanged(daemons: Daemons) -> None:
    """HostileFrames on the session manager's frontend and backend and on the executor
    manager's instance socket (from a process that is no instance), while a session runs 200
    tasks; then real instances send such frames under their own token. Both daemons live (same
    processes), the baseline is unchanged, the node stays Ready, every task of the running
    session succeeds, and each instance that sent a bad frame was killed (its task failed)."""
    with daemons.config.open("a") as f:
        f.write(f"[limits]\nmax_message_size = {MAX_MESSAGE}\n")
    sm = daemons.start_session_manager()
    with daemons.client() as client:
        fuzzing.prepare(client)
        node = daemons.start_executor_manager("n1", 2)
        daemons.wait_ready_nodes(1)
        before = fuzzing.snapshot(client, ["n1"])
        client.call({"type": "CreateSession", "session_id": "work", "spec": {"application": "flmping"}})
        inputs = [f"work {i}".encode() for i in range(200)]
        assert client.call({"type": "CreateTasks", "session_id": "work", "inputs": inputs})["type"] == "TasksCreated"

    endpoints = {"frontend": daemons.frontend, "backend": daemons.backend}
    endpoints["instance"] = fuzzing.instance_socket(daemons, "n1")
    doors = fuzzing.Doors(endpoints)
    generators = {door: HostileFrames(door, seed=11, max_deep=20_000) for door in endpoints}
    try:
        for door, count in CI_FRAMES.items():
            for _ in range(count):
                doors.send(door, generators[door].next())
            doors.discard_replies()
    finally:
        doors.close()
    assert sm.poll() is None, daemons.log("sm")[-3000:]
    assert node.poll() is None, daemons.log("n1")[-3000:]

    with daemons.client() as client:
        fuzzing.register_sender(client)
        sender = HostileFrames("instance", seed=12, max_deep=5_000)
        messages = [sender.next() for _ in range(CI_FROM_INSTANCES)]
        ended = fuzzing.send_from_instances(client, "from-instances", messages)
        assert ended == CI_FROM_INSTANCES
        assert client.call({"type": "Ping"})["type"] == "Pong"
        assert fuzzing.snapshot(client, ["n1"]) == before

        def work_done() -> list[dict[str, Any]] | None:
            tasks = client.call({"type": "ListTasks", "session_id": "work", "include_data": True})["tasks"]
            return tasks if all(t["state"] in ("Succeed", "Failed") for t in tasks) else None

        work = wait_for("the running session's tasks", work_done, timeout=120)
        assert [(t["state"], t.get("output")) for t in work] == [("Succeed", data) for data in inputs]
    assert sm.poll() is None
    assert node.poll() is None
    print(f"fuzz: {doors.sent} messages ({doors.bytes:,} bytes) and {CI_FROM_INSTANCES} from instances")
