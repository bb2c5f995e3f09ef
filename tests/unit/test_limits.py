"""Input limits in the controller: each refused with a typed error that names the limit's key,
nothing committed, and the session manager keeps serving. What would break: a missing check lets
one client fill the memory (and the log) of the session manager for everyone."""

from __future__ import annotations

import pytest

from protocol import frontend as fe
from protocol.errors import ErrorCode
from protocol.types import TaskState
from tests.unit.test_controller_flow import cluster

pytestmark = pytest.mark.timeout(30)


def error(reply: fe.Message, code: ErrorCode, key: str) -> None:
    assert isinstance(reply, fe.Error), reply
    assert reply.code == code, reply
    assert key in reply.message, reply


def test_task_input_over_the_limit_is_refused_and_creates_no_task() -> None:
    """Breaks if a task input over limits.max_task_input_size is accepted, or its request creates part of its
    tasks."""
    h = cluster(max_task_input_size=8)
    h.session("s1")
    reply = h.request(fe.CreateTasks(session_id="s1", inputs=[b"ok", b"x" * 9]))
    error(reply, ErrorCode.TooLarge, "limits.max_task_input_size")
    assert len(h.state.sessions["s1"].tasks) == 0
    assert h.tasks("s1", [b"x" * 8]) == [1]


def test_common_data_over_the_limit_is_refused() -> None:
    """Breaks if common data over limits.max_common_data_size is accepted, or data at the limit refused."""
    h = cluster(max_common_data_size=4)
    error(h.session("s1", common_data=b"12345"), ErrorCode.TooLarge, "limits.max_common_data_size")
    assert "s1" not in h.state.sessions
    assert isinstance(h.session("s2", common_data=b"1234"), fe.SessionReply)


def test_task_output_over_the_limit_fails_the_task_with_a_message() -> None:
    """Breaks if an output over limits.max_task_output_size is stored, or the task fails without naming the
    limit."""
    h = cluster(max_task_output_size=4)  # the fake node echoes the input as the output
    h.session("s1")
    h.tasks("s1", [b"1234", b"12345"])
    h.advance(1.0)
    small, big = h.state.sessions["s1"].tasks
    assert small.state is TaskState.Succeed
    assert small.output == b"1234"
    assert big.state is TaskState.Failed
    assert big.output is None
    assert "limits.max_task_output_size" in (big.message or "")


def test_sessions_and_tasks_per_session_limits() -> None:
    """Breaks if max_sessions or max_tasks_per_session can be exceeded, or the error does not name the limit."""
    h = cluster(max_sessions=2, max_tasks_per_session=3)
    h.session("s1")
    h.session("s2")
    error(h.session("s3"), ErrorCode.LimitExceeded, "limits.max_sessions")
    h.tasks("s1", [b"", b""])
    error(
        h.request(fe.CreateTasks(session_id="s1", inputs=[b"", b""])), ErrorCode.LimitExceeded, "max_tasks_per_session"
    )
    assert h.tasks("s1", [b""]) == [3]


def test_watches_per_client_and_subscribers_are_capped() -> None:
    """Breaks if a client can open more watches than max_watches_per_client, the cap is not per client, or
    max_subscribers can be exceeded (renewing a subscription is not a new one)."""
    h = cluster(max_watches_per_client=2, max_subscribers=1)
    h.session("s1")
    h.tasks("s1", [b""])
    for _ in range(2):
        assert isinstance(h.request(fe.WatchTasks(session_id="s1"), peer=b"c1"), fe.TaskUpdates)
    error(h.request(fe.WatchTasks(session_id="s1"), peer=b"c1"), ErrorCode.LimitExceeded, "max_watches_per_client")
    assert isinstance(h.request(fe.WatchTasks(session_id="s1"), peer=b"c2"), fe.TaskUpdates)  # per client
    assert isinstance(h.request(fe.SubscribeCluster(), peer=b"tui1"), fe.ClusterSnapshot)
    assert isinstance(h.request(fe.SubscribeCluster(), peer=b"tui1"), fe.ClusterSnapshot)  # renewing is fine
    error(h.request(fe.SubscribeCluster(), peer=b"tui2"), ErrorCode.LimitExceeded, "limits.max_subscribers")
