"""Hostile frames, fast: a seeded generator of what a peer could send to a daemon's socket, for the
fuzz test (tests/security/test_fuzz.py) and the soak (bench/fuzz_soak.py).

Each call makes one multipart message (without routing id). The kinds, drawn by weight: a valid
message of the socket with a few fields retyped, dropped or added, or another tag; the same
truncated; arrays and maps nested deep (up to 100,000 levels; in an unknown field, before the
tag, or in place of a known field); str, bin, ext, array and map headers that claim up to 4 GiB;
values of every MessagePack type (ints of every width, float32/64 with NaN and inf, nil, bools,
ext with timestamps of each size, maps keyed by ints, bytes, nil, floats or arrays); wrong frame
counts and empty frames; bad headers; random bytes. A million take a few seconds; no Hypothesis,
so the soak can afford them.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import msgspec

from protocol.codec import HEADER, PROTOCOL_VERSION

Frames = list[bytes]

NODE = {"name": "fz", "hostname": "fz", "capacity": {"cpu": 1, "memory": 1 << 30}, "max_executors": 1}
FRONTEND: list[dict[str, Any]] = [
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
BACKEND: list[dict[str, Any]] = [
    {"type": "RegisterNode", "protocol_version": PROTOCOL_VERSION, "node": NODE, "incarnation": "i1"},
    {"type": "Heartbeat", "epoch": 1, "seq": 1},
    {"type": "Goodbye", "epoch": 1, "seq": 2},
    {
        "type": "Reports",
        "epoch": 1,
        "seq": 1,
        "reports": [
            {"type": "ExecutorCreated", "executor_id": "e1"},
            {"type": "TaskCompleted", "executor_id": "e1", "session_id": "fz", "task_id": 1, "attempt": 1,
             "state": "Succeed", "output": b"o"},
        ],
    },
]  # fmt: skip
INSTANCE: list[dict[str, Any]] = [
    {"type": "InstanceReady", "executor_id": "e1", "protocol_version": PROTOCOL_VERSION, "pid": 1},
    {"type": "SessionEntered", "ok": True},
    {"type": "TaskResults", "results": [{"task_id": 1, "attempt": 1, "ok": True, "output": b"o"}]},
    {"type": "SessionLeft", "ok": True},
]
TEMPLATES = {"frontend": FRONTEND, "backend": BACKEND, "instance": INSTANCE}

_CONTAINERS = [b"\x91", b"\x81\xa1k", b"\xdc\x00\x01", b"\xdd\x00\x00\x00\x01", b"\xde\x00\x01\xc0", b"\x92\x01"]
_HUGE = [
    b"\xdb\xff\xff\xff\xff",  # str32, 4 GiB
    b"\xc6\xff\xff\xff\xff",  # bin32
    b"\xc9\xff\xff\xff\xff\x05",  # ext32
    b"\xdd\xff\xff\xff\xff",  # array32, 4 G elements
    b"\xdf\xff\xff\xff\xff",  # map32
    b"\xda\xff\xff",  # str16
    b"\xc5\xff\xff",  # bin16
    b"\xdc\xff\xff",  # array16
]


class HostileFrames:
    """`next()` returns one hostile multipart message for `socket` ("frontend", "backend" or
    "instance"), drawn from `seed`."""

    def __init__(self, socket: str, seed: int, max_deep: int = 100_000) -> None:
        self.rng = random.Random(seed)
        self.templates = TEMPLATES[socket]
        self.tags = [t["type"] for tpl in TEMPLATES.values() for t in tpl]
        self.max_deep = max_deep
        self.kinds: list[tuple[int, Callable[[], Frames]]] = [
            (40, self.mutated),
            (8, self.truncated),
            (10, self.deep),
            (8, self.huge),
            (12, self.every_type),
            (6, self.frame_counts),
            (5, self.bad_header),
            (5, self.random_bytes),
        ]
        self._weights = [w for w, _ in self.kinds]
        self._makers = [m for _, m in self.kinds]

    def next(self) -> Frames:
        return self.rng.choices(self._makers, self._weights)[0]()

    # ------------------------------------------------------------------ kinds

    def message(self) -> dict[str, Any]:
        return dict(self.rng.choice(self.templates))

    def mutated(self) -> Frames:
        rng, message = self.rng, self.message()
        for _ in range(rng.randint(1, 3)):
            keys = sorted(message)
            action = rng.randrange(5)
            if action == 0 and keys:
                message[rng.choice(keys)] = self.value(3)
            elif action == 1 and keys:
                message.pop(rng.choice(keys))
            elif action == 2:
                message[self.name()] = self.value(3)
            elif action == 3:
                message["type"] = rng.choice([*self.tags, self.name()])
            else:
                message["request_id"] = rng.choice([0, 1, -1, 2**63, 2**64 - 1, 7])
        return [HEADER, msgspec.msgpack.encode(message)]

    def truncated(self) -> Frames:
        payload = self.mutated()[1]
        return [HEADER, payload[: self.rng.randrange(max(1, len(payload)))]]

    def deep(self) -> Frames:
        rng = self.rng
        depth = rng.choice([100, 128, 129, 200, 1_000, 5_000, self.max_deep])
        nest = rng.choice(_CONTAINERS) * depth + b"\xc0"
        tag = b"\xa4type" + msgspec.msgpack.encode(self.message()["type"])
        where = rng.randrange(3)
        if where == 0:  # an unknown field after the tag
            payload = b"\x82" + tag + b"\xa4junk" + nest
        elif where == 1:  # a value before the tag
            payload = b"\x82\xa4junk" + nest + tag
        else:  # in place of a field of the message
            message = self.message()
            key = rng.choice(sorted(message))
            message[key] = msgspec.Raw(nest)
            payload = msgspec.msgpack.encode(message)
        return [HEADER, payload]

    def huge(self) -> Frames:
        head = self.rng.choice(_HUGE) + self.rng.randbytes(self.rng.randrange(16))
        message = self.message()
        message[self.rng.choice([*sorted(message), "junk"])] = msgspec.Raw(head)
        payload = msgspec.msgpack.encode(message)
        return [HEADER, payload[: payload.index(head) + len(head)]]  # the claim is the end of the frame

    def every_type(self) -> Frames:
        message = self.message()
        for _ in range(self.rng.randint(1, 3)):
            message[self.rng.choice([*sorted(message), self.name()])] = self.value(4)
        return [HEADER, msgspec.msgpack.encode(message)]

    def frame_counts(self) -> Frames:
        rng = self.rng
        payload = self.mutated()[1]
        return rng.choice(
            [
                [HEADER],
                [payload],
                [b""],
                [HEADER, b""],
                [b"", b""],
                [HEADER, payload, b""],
                [HEADER, payload, HEADER, payload],
                [HEADER, HEADER, payload],
            ]
        )

    def bad_header(self) -> Frames:
        header = self.rng.choice([b"FLM\x09", b"FLM", b"FLM\x01\x00", b"", b"\x00" * 4, self.rng.randbytes(4)])
        return [header, self.mutated()[1]]

    def random_bytes(self) -> Frames:
        return [HEADER, self.rng.randbytes(self.rng.randrange(1, 512))]

    # ------------------------------------------------------------------ values

    def name(self) -> str:
        return self.rng.choice(["junk", "x", "", "é", "type\x00", "request_id", "a" * 40])

    def value(self, depth: int) -> Any:
        rng = self.rng
        kind = rng.randrange(14 if depth > 0 else 10)
        if kind == 0:
            return None
        if kind == 1:
            return rng.random() < 0.5
        if kind == 2:
            return rng.choice([0, -1, 127, 128, -33, 255, 256, -129, 65535, 65536, 2**31, -(2**31) - 1, 2**63 - 1,
                               2**64 - 1, -(2**63)])  # fmt: skip
        if kind == 3:
            return rng.choice([0.0, -0.0, 1.5, float("nan"), float("inf"), float("-inf"), 1e308])
        if kind == 4:
            return msgspec.Raw(b"\xca" + struct.pack(">f", rng.random()))  # float32
        if kind == 5:
            return rng.choice(["", "x", "é" * 40, "\x00", "a" * 300])
        if kind == 6:
            return rng.randbytes(rng.choice([0, 1, 31, 32, 255, 256, 70_000]))
        if kind == 7:  # timestamps: ext -1 of 4, 8 and 12 bytes, and a bad one
            return msgspec.msgpack.Ext(-1, rng.randbytes(rng.choice([4, 8, 12, 5])))
        if kind == 8:
            return msgspec.msgpack.Ext(rng.randrange(-128, 128), rng.randbytes(rng.choice([1, 2, 4, 8, 16, 3, 300])))
        if kind == 9:
            return msgspec.Raw(b"\xc1")  # never used
        if kind in (10, 11):
            return [self.value(depth - 1) for _ in range(rng.randrange(4))]
        keys: list[Any] = [1, -5, b"k", None, 1.5, True, "s", [1, 2]]
        pairs = rng.randrange(1, 4)
        body = b"".join(
            msgspec.msgpack.encode(rng.choice(keys)) + msgspec.msgpack.encode(self.value(depth - 1))
            for _ in range(pairs)
        )
        return msgspec.Raw(bytes([0x80 + pairs]) + body)  # a map with non-str keys (an array key too)
