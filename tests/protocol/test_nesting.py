"""The depth check before decoding (protocol/nesting.py, protocol/shapes.py) and the codec's rule
that decoding a peer's bytes raises FrameError and nothing else."""

from __future__ import annotations

import datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import backend as be
from protocol import cache as ca
from protocol import codec
from protocol import frontend as fe
from protocol import instance as im
from protocol.codec import HEADER, FrameError
from protocol.errors import ErrorCode
from protocol.nesting import MAX_DEPTH, bounded, too_deep
from protocol.shapes import Shapes
from protocol.types import TaskState

pytestmark = pytest.mark.timeout(60)

ALL_CODECS: list[codec.Codec[Any]] = [
    codec.client_request_codec(),
    codec.server_reply_codec(),
    codec.node_message_codec(),
    codec.manager_message_codec(),
    codec.instance_message_codec(),
    codec.instance_command_codec(),
    ca.request_codec(),
    ca.reply_codec(),
]


def depth(value: object) -> int:
    """Nesting of arrays and maps, by recursion (the reference the walk must agree with)."""
    if isinstance(value, list | tuple):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((max(depth(k), depth(v)) for k, v in value.items()), default=0)
    return 0


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=300),
    st.binary(max_size=70_000),
    st.builds(msgspec.msgpack.Ext, st.integers(0, 127), st.binary(max_size=300)),
    st.datetimes(timezones=st.just(datetime.UTC)),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5) | st.binary(max_size=4), inner, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(VALUES, st.integers(0, 8))
def test_the_walk_agrees_with_recursion_on_every_msgpack_type(value: Any, limit: int) -> None:
    """Every MessagePack type (ints of every width, floats, str/bin/ext of every length field,
    timestamps, maps with non-str keys): the walk's verdict equals the depth found by
    recursion. Breaks if a token size in the walk's tables is wrong (the walk would lose its
    place and could miss a deep nest, or refuse a legal frame)."""
    payload = msgspec.msgpack.encode(value)
    assert too_deep(payload, limit) == (depth(value) > limit)


HEADERS = [b"\x91", b"\x81\xa1k", b"\xdc\x00\x01", b"\xdd\x00\x00\x00\x01", b"\xde\x00\x01\xc0"]


@pytest.mark.parametrize("width", HEADERS)
def test_every_container_header_counts_as_a_level(width: bytes) -> None:
    """fixarray, fixmap, array16/32, map16/32: MAX_DEPTH levels pass, one more is refused.
    Breaks if a header kind is treated as a scalar (a nest of it would pass unchecked)."""
    assert not too_deep(width * MAX_DEPTH + b"\xc0")
    assert too_deep(width * (MAX_DEPTH + 1) + b"\xc0")
    assert too_deep(width * 100_000 + b"\xc0")


def test_a_deep_value_behind_siblings_and_blobs_is_found() -> None:
    """Each level preceded by a sibling string and a binary blob holding header-like bytes:
    the walk skips the bodies by their lengths. Breaks if bodies are read as tokens."""
    level = b"\x93\xd9\x40" + b"\x91" * 64 + b"\xc4\x20" + b"\xdf" * 32
    assert too_deep(level * (MAX_DEPTH + 1) + b"\xc0")
    assert not too_deep(level * (MAX_DEPTH - 1) + b"\xc0")


@pytest.mark.parametrize(
    "payload",
    [
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 G elements
        b"\xdf\xff\xff\xff\xff" + b"\xa1k\xc0" * 100,  # a map claiming 4 G pairs
        b"\xc6\xff\xff\xff\xff" + b"x" * 200,  # a 4 GB binary
        b"\xdb\xff\xff\xff\xff" + b"x" * 200,  # a 4 GB string
        b"\xc9\xff\xff\xff\xff\x05" + b"x" * 200,  # a 4 GB extension
        b"\x91" * 50 + b"\xc1" + b"\x91" * 500,  # a byte that is never used, then more nesting
    ],
)
def test_huge_declared_lengths_and_malformed_bytes_end_the_walk_quickly(payload: bytes) -> None:
    """Declared lengths past the end, or a reserved byte: the walk stops (the decoder reports the
    error) without allocating or looping. Breaks if a length is trusted."""
    assert too_deep(payload) is False
    for dec in ALL_CODECS:
        with pytest.raises(FrameError) as raised:
            dec.decode([HEADER, payload])
        assert raised.value.code is ErrorCode.BadMessage


def test_the_cheap_bounds_are_sound() -> None:
    """`bounded` may only say yes when no nest deeper than the limit is possible."""
    assert bounded(b"\x91" * MAX_DEPTH)
    assert not bounded(b"\x91" * (MAX_DEPTH + 1) + b"\xc0")
    blob = b"\x91" * (MAX_DEPTH + 1)
    assert not bounded(b"\xc5" + len(blob).to_bytes(2, "big") + blob)  # inside a blob: unsure, not wrong


@pytest.mark.parametrize("dec", ALL_CODECS, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("levels", [MAX_DEPTH, 1000, 100_000])
def test_a_deep_unknown_field_or_pre_tag_value_is_a_bad_message(dec: codec.Codec[Any], levels: int) -> None:
    """The finding: a 1 KB frame nested 1,000 levels deep raised RecursionError out of the codec
    and killed the daemon. Now every codec answers FrameError(BadMessage), whether the nest is an
    unknown field after the tag or a value before it."""
    nest = b"\x91" * levels + b"\xc0"
    for payload in (b"\x82\xa4type\xa4Ping\xa4junk" + nest, b"\x82\xa4junk" + nest + b"\xa4type\xa4Ping"):
        with pytest.raises(FrameError) as raised:
            dec.decode([HEADER, payload])
        assert raised.value.code is ErrorCode.BadMessage
        assert "nested deeper than" in raised.value.message
    assert codec.peek_request_id([HEADER, b"\x82\xa4junk" + nest + b"\xaarequest_id\x05"]) == 0


def test_a_nest_inside_a_batch_element_is_refused() -> None:
    """A deep value before the tag of one report among many (the strict shape does not fit, the
    walk finds it). Breaks if large batches skip the check."""
    good = codec.encode_payload(
        be.TaskCompleted(executor_id="e", session_id="s", task_id=1, attempt=1, state=TaskState.Succeed)
    )
    bad = b"\x82\xa4junk" + b"\x91" * 2000 + b"\xc0" + b"\xa4type\xadTaskCompleted"
    reports = b"\xdc" + (501).to_bytes(2, "big") + good * 250 + bad + good * 250
    payload = b"\x84\xa4type\xa7Reports\xa5epoch\x01\xa3seq\x02\xa7reports" + reports
    with pytest.raises(FrameError, match="nested deeper than"):
        codec.node_message_codec().decode([HEADER, payload])


def test_any_exception_from_the_decoder_becomes_a_frame_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the decoder raises (MemoryError, a msgspec bug) is a bad frame, not a crash."""
    dec = codec.client_request_codec()

    class Exploding:
        def decode(self, payload: bytes) -> object:
            raise MemoryError("out of memory")

    monkeypatch.setattr(dec, "_decoder", Exploding())
    with pytest.raises(FrameError) as raised:
        dec.decode([HEADER, msgspec.msgpack.encode({"type": "Ping"})])
    assert raised.value.code is ErrorCode.BadMessage
    assert "MemoryError" in raised.value.message


PART = ca.Part(version=1, size=3, crc=1, data=b"\xdd\x00\x01")
RECALL = be.RecallTasks(executor_id="e", session_id="s", count=1)
MESSAGES: list[tuple[Any, msgspec.Struct]] = [
    (fe.ClientRequest, fe.CreateTasks(session_id="s", inputs=[b"\x91" * 300, None], request_id=3)),
    (fe.ServerReply, fe.TasksReply(tasks=[], request_id=1)),
    (
        be.NodeMessage,
        be.Reports(
            epoch=1,
            seq=2,
            reports=[
                be.TaskCompleted(executor_id="e", session_id="s", task_id=1, attempt=1, state=TaskState.Failed),
                be.ExecutorUnbound(executor_id="e", unstarted=[be.TaskKey(task_id=2, attempt=1)], reason="x"),
                be.ExecutorBindFailed(executor_id="e", session_id="s", code=19, message="m"),
            ],
        ),
    ),
    (be.ManagerMessage, be.Commands(epoch=1, seq=1, commands=[RECALL])),
    (im.InstanceMessage, im.TaskResults(results=[im.TaskOutcome(task_id=1, attempt=1, ok=True, output=b"\xdd" * 99)])),
    (im.InstanceCommand, im.InvokeTasks(tasks=[be.TaskAssignment(task_id=1, attempt=1, input=b"\xdf" * 300)])),
    (ca.CacheRequest, ca.PutObject(key="a/s/o", kind=ca.WriteKind.Patch, data=b"\x91" * 300, request_id=2)),
    (ca.CacheReply, ca.ObjectData(key="a/s/o", version=2, stamp=7, base=PART, deltas=[PART])),
]


@pytest.mark.parametrize(("union", "message"), MESSAGES, ids=lambda m: type(m).__name__)
def test_our_own_messages_fit_their_strict_shape_and_odd_ones_do_not(union: Any, message: msgspec.Struct) -> None:
    """Our encoder's output fits (so large batches are checked at C speed); an unknown field, a
    tag that is not first or a mistyped value does not (so those are walked). Breaks if a shape
    lets through a value msgspec would skip, which is where a deep nest can hide."""
    shapes = Shapes(union)
    payload = codec.encode_payload(message)
    assert shapes.fits(payload)
    fields = msgspec.msgpack.decode(payload)
    assert not shapes.fits(msgspec.msgpack.encode({**fields, "added_later": [[1]]}))
    tag_last = {k: v for k, v in fields.items() if k != "type"} | {"type": fields["type"]}
    assert not shapes.fits(msgspec.msgpack.encode(tag_last))
    assert not shapes.fits(payload + b"\xc0")  # trailing bytes


def test_unknown_fields_inside_nested_structs_do_not_fit() -> None:
    """Strictness reaches every level: a nested struct (TaskKey in ExecutorUnbound, inside a
    merged union) with an extra field does not fit."""
    shapes = Shapes(be.NodeMessage)
    unbound: dict[str, object] = {"type": "ExecutorUnbound", "executor_id": "e", "reason": "r"}
    message = {"type": "Reports", "epoch": 1, "seq": 1, "reports": [unbound]}
    assert shapes.fits(msgspec.msgpack.encode(message))
    unbound["unstarted"] = [{"task_id": 1, "attempt": 1, "extra": [[[1]]]}]
    assert not shapes.fits(msgspec.msgpack.encode(message))
