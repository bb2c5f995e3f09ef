"""Shared by the fuzz test (test_fuzz.py) and the soak (bench/fuzz_soak.py): a cluster with state
worth protecting, raw sockets on each of its doors, and what must not change.

`prepare` gives a session manager (with a `Daemons` of tests/integration/daemons.py) a baseline
before any executor manager is up: an application and a closed session with tasks (Cancelled,
so nothing changes them later) whose spec and inputs must survive. `Doors` holds DEALERs on the
frontend, the backend and the executor manager's instance socket, sends a message to one of
them, and discards replies so nothing backs up. `send_from_instances` makes real instances send
frames under their own token, through tests/security/services/misbehaving.py.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

import msgspec
import zmq

from tests.support.daemons import Daemons, RawClient
from tests.support.waiting import wait_for

BASELINE_APP = "fuzz-base-app"
BASELINE_SESSION = "fuzz-baseline-session-7f3a91"
BASELINE_INPUTS = [b"a", b"", None, bytes(range(256))]
SERVICE = Path(__file__).parent / "services" / "misbehaving.py"


def prepare(client: RawClient) -> None:
    """The baseline: call before any executor manager is up."""
    spec = {"command": "/bin/true", "description": "baseline", "labels": ["x"]}
    assert client.call({"type": "RegisterApplication", "name": BASELINE_APP, "spec": spec})["type"] != "Error"
    created = client.call(
        {"type": "CreateSession", "session_id": BASELINE_SESSION, "spec": {"application": BASELINE_APP}}
    )
    assert created["type"] == "SessionReply", created
    reply = client.call({"type": "CreateTasks", "session_id": BASELINE_SESSION, "inputs": BASELINE_INPUTS})
    assert reply["type"] == "TasksCreated", reply
    assert client.call({"type": "CloseSession", "session_id": BASELINE_SESSION})["type"] == "SessionReply"


def snapshot(client: RawClient, nodes: list[str]) -> dict[str, Any]:
    """What must not change: the applications, the baseline session (spec, state, its tasks'
    inputs and states) and the state of each of `nodes`. (Hostile streams hold valid requests
    too, which may add sessions or nodes of their own: those are not compared.)"""
    apps = client.call({"type": "ListApplications"})["applications"]
    session = client.call({"type": "GetSession", "session_id": BASELINE_SESSION})["session"]
    tasks = client.call({"type": "ListTasks", "session_id": BASELINE_SESSION, "include_data": True})["tasks"]
    listed = client.call({"type": "ListNodes"})["nodes"]
    return {
        "apps": {a["name"]: a for a in apps if a["name"] in ("flmping", BASELINE_APP)},
        "session": {k: session[k] for k in ("id", "application", "state", "slots", "common_data") if k in session},
        "tasks": [(t["id"], t.get("input"), t["state"]) for t in tasks],
        "nodes": {n["name"]: n["state"] for n in listed if n["name"] in nodes},
    }


def instance_socket(daemons: Daemons, node: str) -> str:
    """The ipc endpoint of `node`'s instance socket (node.py names it after the daemon's pid)."""
    path = daemons.dir / f"rt-{node}" / f"{node}-{daemons.procs[node].pid}.sock"
    assert path.exists(), path
    return f"ipc://{path}"


class Doors:
    """DEALERs on each door of a cluster; `send` never blocks for long, replies are discarded."""

    def __init__(self, endpoints: dict[str, str], per_door: int = 3, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.sockets: dict[str, list[zmq.Socket[bytes]]] = {}
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        for door, endpoint in endpoints.items():
            self.sockets[door] = []
            for i in range(per_door):
                sock = ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, 10_000)
                if i == 1:  # an id that looks like a peer's; the others are random
                    sock.setsockopt(zmq.ROUTING_ID, {"backend": b"em:fz:1", "instance": b"i-0"}.get(door, b"c1"))
                sock.connect(endpoint)
                self.sockets[door].append(sock)
        self.sent = dict.fromkeys(endpoints, 0)
        self.bytes = 0

    def send(self, door: str, frames: list[bytes]) -> None:
        sock = self.rng.choice(self.sockets[door])
        while True:
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
                break
            except zmq.Again:  # the daemon is behind: read what it said meanwhile, then retry
                self.discard_replies(wait_ms=10)
        self.sent[door] += 1
        self.bytes += sum(len(f) for f in frames)

    def discard_replies(self, wait_ms: int = 0) -> None:
        for group in self.sockets.values():
            for sock in group:
                if sock.poll(wait_ms):
                    while sock.poll(0):
                        sock.recv_multipart()
                wait_ms = 0

    def close(self) -> None:
        for group in self.sockets.values():
            for sock in group:
                sock.close(0)


def register_sender(client: RawClient) -> None:
    """An application whose instances send whatever their task's input says (misbehaving.py)."""
    spec = {"command": sys.executable, "arguments": [str(SERVICE), "behave"]}
    assert client.call({"type": "RegisterApplication", "name": "fuzz-sender", "spec": spec})["type"] != "Error"


def send_from_instances(client: RawClient, session_id: str, messages: list[list[bytes]], timeout: float = 120) -> int:
    """Real instances send `messages` under their own tokens, one task (and so one bind, most
    likely one instance) each, in a new session; returns how many tasks ended. The executor
    manager kills an instance for its first bad frame, so each message comes from a fresh one
    as long as the node binds the session (3 kills, then its binds there fail; the session
    manager then fails the rest)."""
    created = client.call({"type": "CreateSession", "session_id": session_id, "spec": {"application": "fuzz-sender"}})
    assert created["type"] == "SessionReply", created
    inputs = [b"frames:" + msgspec.msgpack.encode(frames).hex().encode() for frames in messages]
    assert client.call({"type": "CreateTasks", "session_id": session_id, "inputs": inputs})["type"] == "TasksCreated"

    def ended() -> int | None:
        tasks = client.call({"type": "ListTasks", "session_id": session_id, "include_data": False})["tasks"]
        done = [t for t in tasks if t["state"] in ("Succeed", "Failed", "Cancelled")]
        return len(done) if len(done) == len(tasks) else None

    return wait_for(f"the tasks of {session_id} to end", ended, timeout=timeout)


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"
