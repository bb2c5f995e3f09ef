"""An adversary on the backend: a raw DEALER that speaks the executor-manager protocol by hand.

It is what any script on the network can do: pick a routing id (derived from what a client can
read, or copied from a real node), present a CURVE key it holds, send any backend message and
record everything the session manager sends it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgspec
import zmq
import zmq.auth

from protocol.codec import HEADER, PROTOCOL_VERSION
from tests.support.daemons import RawClient


def curve_of(keys_dir: Path, name: str) -> tuple[bytes, bytes, bytes]:
    """(server public, own public, own secret) for the key pair `name` of `flamed keygen`."""
    server, _ = zmq.auth.load_certificate(keys_dir / "server.key")
    public, secret = zmq.auth.load_certificate(keys_dir / f"{name}.key_secret")
    assert secret is not None
    return server, public, secret


class BackendPeer:
    """A DEALER on the session manager's backend with routing id `routing_id` (random if None)."""

    def __init__(
        self, endpoint: str, routing_id: bytes | None = None, curve: tuple[bytes, bytes, bytes] | None = None
    ) -> None:
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, routing_id or b"x-" + os.urandom(8).hex().encode())
        if curve is not None:
            server, public, secret = curve
            self.sock.setsockopt(zmq.CURVE_SERVERKEY, server)
            self.sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
            self.sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
        self.sock.connect(endpoint)
        #: every raw payload received (to look for leaked bytes) and its decoded form
        self.raw: list[bytes] = []
        self.received: list[dict[str, Any]] = []

    def __enter__(self) -> BackendPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close(0)

    def send(self, message: dict[str, Any]) -> None:
        self.sock.send_multipart([HEADER, msgspec.msgpack.encode(message)])

    def collect(self, seconds: float) -> list[dict[str, Any]]:
        """Everything that arrives within `seconds` (the adversary listens that long)."""
        deadline = time.monotonic() + seconds
        got: list[dict[str, Any]] = []
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1):
                continue
            frames = self.sock.recv_multipart()
            self.raw.append(b"".join(frames))
            message: dict[str, Any] = msgspec.msgpack.decode(frames[-1])
            got.append(message)
        self.received.extend(got)
        return got

    def wait_for_type(self, kinds: set[str], seconds: float) -> dict[str, Any] | None:
        """The first message of one of `kinds` within `seconds` (others are recorded)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            for message in self.collect(min(left, 0.1)):
                if message.get("type") in kinds:
                    return message
        return None

    def leaked(self, secret: bytes) -> bool:
        return any(secret in payload for payload in self.raw)


def register_message(node: str, incarnation: str, executors: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A `RegisterNode` for `node`, as a script would write it."""
    return {
        "type": "RegisterNode",
        "protocol_version": PROTOCOL_VERSION,
        "node": {"name": node, "hostname": "h", "capacity": {"cpu": 4, "memory": 1 << 30}, "max_executors": 4},
        "incarnation": incarnation,
        "executors": executors or [],
        **extra,
    }


def node_row(client: RawClient, name: str) -> dict[str, Any]:
    """Node `name` as ListNodes shows it to any client ({} if unknown)."""
    nodes: list[dict[str, Any]] = client.call({"type": "ListNodes"})["nodes"]
    return next((n for n in nodes if n["name"] == name), {})


def stat(client: RawClient, name: str) -> float:
    """Counter `name` of GetStats (0 until it moves)."""
    return float(client.call({"type": "GetStats"})["stats"].get(f"{name}_total", 0.0))
