"""The wire contract: round trips, frozen bytes for scripted clients, and clear decode errors."""

from __future__ import annotations

import msgspec
import pytest

from protocol import backend as be
from protocol import cache as ca
from protocol import frontend as fe
from protocol import instance as ins
from protocol.codec import (
    HEADER,
    PROTOCOL_VERSION,
    FrameError,
    client_request_codec,
    encode,
    instance_command_codec,
    instance_message_codec,
    manager_message_codec,
    node_message_codec,
    peek_request_id,
    server_reply_codec,
)
from protocol.errors import ErrorCode
from protocol.types import NodeInfo, ResourceRequirement, SessionSpec, Task, TaskState

pytestmark = pytest.mark.timeout(30)

REQUESTS: list[fe.Message] = [
    fe.Hello(protocol_version=PROTOCOL_VERSION, client="test", request_id=1),
    fe.CreateSession(session_id="s1", spec=SessionSpec(application="flmping", common_data=b"\x00\xff"), request_id=2),
    fe.CreateTasks(session_id="s1", inputs=[b"a", None, b""], request_id=3),
    fe.WatchTasks(session_id="s1", task_ids=[1, 2], request_id=4),
    fe.ListNodes(request_id=5),
]

REPLIES: list[fe.Message] = [
    fe.Welcome(protocol_version=1, server_version="0.1.0", request_id=1),
    fe.TasksCreated(session_id="s1", task_ids=[1, 2, 3], request_id=3),
    fe.TaskUpdates(tasks=[Task(id=1, session_id="s1", state=TaskState.Succeed, output=b"ok")], request_id=4),
    fe.Error(code=ErrorCode.NotFound, message="session s9 not found", request_id=6),
]

NODE: list[be.Message] = [
    be.RegisterNode(
        protocol_version=1,
        node=NodeInfo(name="n1", hostname="h", capacity=ResourceRequirement(cpu=2, memory=1 << 30), max_executors=2),
        incarnation="abc",
    ),
    be.Reports(
        epoch=3,
        seq=7,
        reports=[
            be.TaskCompleted(executor_id="e1", session_id="s1", task_id=1, attempt=1, state=TaskState.Failed),
            be.ExecutorUnbound(executor_id="e1", unstarted=[be.TaskKey(task_id=2, attempt=1)], reason="died"),
            be.TasksReturned(
                executor_id="e2", session_id="s1", unstarted=[be.TaskKey(task_id=4, attempt=1)], waiting=True
            ),
        ],
    ),
    be.Heartbeat(epoch=3, seq=8),
    be.Goodbye(epoch=3, seq=9),
]

MANAGER: list[be.Message] = [
    be.Registered(epoch=3, executors=[], heartbeat_interval=1.0, heartbeat_liveness=5),
    be.Registered(epoch=4, executors=[], heartbeat_interval=1.0, heartbeat_liveness=5, applications=["a", "b"]),
    be.Commands(
        epoch=3,
        seq=1,
        ack=7,
        commands=[
            be.LaunchTasks(executor_id="e1", session_id="s1", tasks=[be.TaskAssignment(task_id=1, attempt=1)]),
            be.ReleaseExecutor(executor_id="e2"),
            be.RemoveApplication(executor_id="", application="gone"),
        ],
    ),
    be.Error(code=ErrorCode.Reregister, message="stale epoch"),
]


@pytest.mark.parametrize(
    ("messages", "codec"),
    [
        (REQUESTS, client_request_codec()),
        (REPLIES, server_reply_codec()),
        (NODE, node_message_codec()),
        (MANAGER, manager_message_codec()),
        (
            [
                ins.InstanceReady(executor_id="e1", protocol_version=1, pid=42),
                ins.TaskResults(results=[]),
                ins.TaskWaiting(task_id=3, attempt=1),
            ],
            instance_message_codec(),
        ),
        (
            [ins.InvokeTasks(tasks=[be.TaskAssignment(task_id=1, attempt=2, input=b"x")]), ins.TasksWithdrawn()],
            instance_command_codec(),
        ),
        (
            [
                ca.PutObject(key="a/s/o", kind=ca.WriteKind.Patch, data=b"\x00", size=9, request_id=1),
                ca.GetObject(key="a/s/o", have=3, stamp=7),
                ca.ReadChunk(key="a/s/o", version=2, offset=4, length=8),
            ],
            ca.request_codec(),
        ),
        (
            [
                ca.ObjectData(key="a/s/o", version=2, stamp=7, deltas=[ca.Part(version=2, size=1, crc=5, data=b"x")]),
                ca.Error(code=ErrorCode.TooLarge, message="big"),
            ],
            ca.reply_codec(),
        ),
    ],
)
def test_every_link_round_trips(messages: list[msgspec.Struct], codec: object) -> None:
    """Breaks if a message of any link does not decode to what was encoded, or its frames do not start with the
    protocol header."""
    for message in messages:
        frames = encode(message)
        assert frames[0] == HEADER
        assert codec.decode(frames) == message  # type: ignore[attr-defined]  # codecs of several message unions, parametrized as object


def test_frozen_bytes_for_scripted_clients() -> None:
    """PROTOCOL.md documents these bytes; a change here breaks clients written from it."""
    hello = encode(fe.Hello(protocol_version=1, client="sh", request_id=1))
    assert hello[0] == b"FLM\x01"
    assert msgspec.msgpack.decode(hello[1]) == {"type": "Hello", "request_id": 1, "protocol_version": 1, "client": "sh"}
    create = encode(fe.CreateTasks(session_id="s1", inputs=[b"hi"], request_id=9))
    assert msgspec.msgpack.decode(create[1]) == {
        "type": "CreateTasks",
        "request_id": 9,
        "session_id": "s1",
        "inputs": [b"hi"],
    }


def test_cache_fields_are_optional_for_older_peers() -> None:
    """Would break if Welcome/Registered lost their defaults: an older session manager omits
    `cache_endpoint` and a newer client must still decode its Welcome."""
    old = msgspec.msgpack.encode({"type": "Welcome", "request_id": 1, "protocol_version": 1, "server_version": "0"})
    assert server_reply_codec().decode([HEADER, old]).cache_endpoint == ""  # type: ignore[union-attr]  # a Welcome by construction; the decoder's type is every reply
    registered = be.Registered(epoch=1, executors=[], heartbeat_interval=1.0, heartbeat_liveness=5)
    assert "cache_endpoint" not in msgspec.msgpack.decode(encode(registered)[1])


def test_a_plain_msgpack_map_from_another_language_decodes() -> None:
    """Breaks if a request written as a plain MessagePack map (as another language's client sends it) is not
    decoded."""
    payload = msgspec.msgpack.encode({"type": "GetSession", "session_id": "s1", "request_id": 5})
    request = client_request_codec().decode([HEADER, payload])
    assert request == fe.GetSession(session_id="s1", request_id=5)


@pytest.mark.parametrize(
    ("frames", "code", "words"),
    [
        ([HEADER], ErrorCode.BadMessage, "expected 2 frames"),
        ([b"XXXX", b"\x80"], ErrorCode.BadMessage, "bad header"),
        ([b"FLM\x07", b"\x80"], ErrorCode.VersionMismatch, "protocol version 7"),
        ([HEADER, b"\xc1\xc1"], ErrorCode.BadMessage, "malformed"),
        ([HEADER, msgspec.msgpack.encode({"type": "FlyToTheMoon"})], ErrorCode.BadMessage, "FlyToTheMoon"),
        ([HEADER, msgspec.msgpack.encode({"type": "GetSession", "session_id": 5})], ErrorCode.BadMessage, "session_id"),
        ([HEADER, msgspec.msgpack.encode({"type": "GetSession"})], ErrorCode.BadMessage, "session_id"),
        ([HEADER, msgspec.msgpack.encode([1, 2, 3])], ErrorCode.BadMessage, "invalid message"),
    ],
)
def test_bad_frames_raise_frame_errors_that_say_why(frames: list[bytes], code: ErrorCode, words: str) -> None:
    """Breaks if a bad frame raises something else than a FrameError with the right code and a message that
    says why."""
    with pytest.raises(FrameError) as caught:
        client_request_codec().decode(frames)
    assert caught.value.code is code
    assert words in caught.value.message


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    """Breaks if a field added by a newer peer makes an older one refuse the message."""
    payload = msgspec.msgpack.encode({"type": "Ping", "request_id": 1, "added_in_v1_1": True})
    assert client_request_codec().decode([HEADER, payload]) == fe.Ping(request_id=1)


def test_the_request_id_of_an_undecodable_request_can_still_be_read() -> None:
    """Breaks if the error reply to an undecodable request cannot carry its request id (or reading it from
    garbage raises)."""
    payload = msgspec.msgpack.encode({"type": "GetSession", "session_id": 5, "request_id": 77})
    assert peek_request_id([HEADER, payload]) == 77
    assert peek_request_id([HEADER, b"\xc1"]) == 0
    assert peek_request_id([]) == 0
