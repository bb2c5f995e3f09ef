"""A session whose instances cannot start: its clients learn why in seconds, not never.

Through the pure controller with a fake node whose every bind fails (as an application whose
command does not exist, or whose `on_session_enter` raises): once the session's bind failures
reach `session_bind_retry_limit`, its Pending tasks fail with the bind failure's reason; the
session stays Open with its events; tasks created later try to bind again.
"""

from __future__ import annotations

import pytest

from flamed.core import records as r
from flamed.core.snapshot import decode_state, encode_state
from flamed.core.state import ClusterState
from protocol import frontend as fe
from protocol.types import ApplicationSpec, SessionState, TaskState
from tests.unit.core_harness import Harness

pytestmark = pytest.mark.timeout(30)

CANNOT_START = "cannot start '/nonexistent/bin/my-service': [Errno 2] No such file or directory"


def broken_cluster(limit: int = 3) -> Harness:
    h = Harness(session_bind_retry_limit=limit)
    spec = ApplicationSpec(command="/nonexistent/bin/my-service")
    reply = h.request(fe.RegisterApplication(name="broken", spec=spec))
    assert isinstance(reply, fe.ApplicationReply), reply
    h.add_node("n1", 2, bind_error=CANNOT_START)
    return h


def states(h: Harness, session_id: str) -> list[TaskState]:
    return [t.state for t in h.state.sessions[session_id].tasks]


def test_pending_tasks_fail_with_the_bind_failure_reason_at_the_retry_limit() -> None:
    """Without the fix the tasks stay Pending for ever and the client times out with no reason."""
    h = broken_cluster(limit=3)
    h.session("s1", application="broken")
    h.tasks("s1", [b"a", b"b"])
    h.advance(2.0)
    session = h.state.sessions["s1"]
    assert session.state is SessionState.Open
    assert states(h, "s1") == [TaskState.Failed, TaskState.Failed]
    for task in session.tasks:
        assert task.message is not None
        assert "/nonexistent/bin/my-service" in task.message, task.message
        assert "3 failed attempts" in task.message, task.message
    assert session.bind_paused  # binds already under way when the limit was reached may add one or two
    reply = h.request(fe.GetSession(session_id="s1"))
    assert isinstance(reply, fe.SessionReply)
    assert any("retry limit reached" in (e.message or "") for e in reply.session.events)
    assert reply.session.failed == 2
    assert reply.session.pending == 0


def test_a_later_task_tries_to_bind_again_and_runs_once_the_node_can_start_it() -> None:
    """New tasks lift the pause: the application may have been fixed meanwhile."""
    h = broken_cluster(limit=2)
    h.session("s1", application="broken")
    h.tasks("s1", [b"a"])
    h.advance(2.0)
    assert states(h, "s1") == [TaskState.Failed]
    binds_before = sum(1 for n in h.nodes.values() for c in n.commands if type(c).__name__ == "BindExecutor")
    h.advance(2.0)  # paused: nothing pending, no binds attempted meanwhile
    binds_paused = sum(1 for n in h.nodes.values() for c in n.commands if type(c).__name__ == "BindExecutor")
    assert binds_paused == binds_before
    for node in h.nodes.values():
        node.bind_error = None  # the operator fixed the command
    h.tasks("s1", [b"b"])
    h.advance(2.0)
    assert states(h, "s1") == [TaskState.Failed, TaskState.Succeed]


def test_the_pause_survives_a_restart_through_log_and_snapshot() -> None:
    """Replaying the records (or loading a snapshot) rebuilds the failed tasks and the pause."""
    h = broken_cluster(limit=2)
    h.session("s1", application="broken")
    h.tasks("s1", [b"a"])
    h.advance(2.0)
    assert any(isinstance(rec, r.PendingTasksFailed) for rec in h.records)
    replayed = ClusterState()
    for record in h.records:
        replayed.apply(record)  # type: ignore[arg-type]  # Harness.records holds the outbox's records as object
    for state in (replayed, decode_state(encode_state(replayed))):
        session = state.sessions["s1"]
        assert session.bind_paused
        assert [t.state for t in session.tasks] == [TaskState.Failed]
        assert "/nonexistent/bin/my-service" in (session.tasks[0].message or "")
