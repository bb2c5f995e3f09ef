"""PROTOCOL.md is what scripted clients are written from: it must name every message and code."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from protocol import backend, cache, frontend, instance
from protocol.errors import ErrorCode
from protocol.types import ConnectionState, ExecutorState, NodeState, SessionState, TaskState

pytestmark = pytest.mark.timeout(10)

SPEC = (Path(__file__).parents[2] / "protocol" / "PROTOCOL.md").read_text()


def members(union: object) -> list[str]:
    return [t.__name__ for t in typing.get_args(union)]


@pytest.mark.parametrize(
    "union",
    [
        frontend.ClientRequest,
        frontend.ServerReply,
        backend.NodeMessage,
        backend.ManagerMessage,
        backend.ExecutorCommand,
        backend.ExecutorReport,
        instance.InstanceMessage,
        instance.InstanceCommand,
        cache.CacheRequest,
        cache.CacheReply,
    ],
)
def test_every_message_type_is_documented(union: object) -> None:
    """Breaks if a message type of this union is missing from PROTOCOL.md."""
    missing = [name for name in members(union) if f"`{name}" not in SPEC]
    assert not missing, f"PROTOCOL.md does not describe {missing}"


def test_every_error_code_and_state_is_documented() -> None:
    """Breaks if an error code or a state value is missing from PROTOCOL.md."""
    for enum in (ErrorCode, TaskState, SessionState, ExecutorState, NodeState, ConnectionState):
        missing = [m.value for m in enum if f"`{m.value}`" not in SPEC]
        assert not missing, f"PROTOCOL.md does not list {enum.__name__} values {missing}"


def test_every_client_visible_limit_is_documented() -> None:
    """Each `[limits]` key bounds what a client may send or hold; a client written from the
    spec alone must know them (and that an oversized frame gets no reply)."""
    from flamed.config import LimitsConfig

    missing = [key for key in LimitsConfig.__struct_fields__ if f"`{key}`" not in SPEC]
    assert not missing, f"PROTOCOL.md does not name the limits {missing}"
    assert "no reply" in SPEC
