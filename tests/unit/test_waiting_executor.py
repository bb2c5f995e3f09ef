"""A task that waits for a task of its own session, through the pure controller: the executor
whose running task waits (`TasksReturned{waiting}`) is fed no more, what it handed back runs
elsewhere without a retry, and it is fed again once it holds no task."""

from __future__ import annotations

import pytest

from protocol import backend as be
from protocol import frontend as fe
from protocol.types import ApplicationSpec, TaskState
from tests.unit.core_harness import Harness

pytestmark = pytest.mark.timeout(30)


def test_a_waiting_executor_is_not_fed_and_its_session_gets_another() -> None:
    """Breaks if the session manager dispatches the task waited for into the executor whose
    running task waits for it (a recursive service deadlocks), or counts a retry for the tasks
    handed back, or never feeds that executor again."""
    h = Harness()
    h.request(fe.RegisterApplication(name="flmping", spec=ApplicationSpec(command="true")))
    n1 = h.add_node("n1", 2, auto_run=False)
    h.session("s1")
    h.tasks("s1", [b"outer"])
    h.advance(0.5, step=0.05)
    ((outer_executor, queue),) = ((e, q) for e, q in n1.queued.items() if q)
    assert [t.task_id for t in queue] == [1]
    n1.outbox.append(be.TasksReturned(executor_id=outer_executor, session_id="s1", waiting=True))
    h.advance(0.2, step=0.05)
    h.tasks("s1", [b"inner", b"inner2"])
    h.advance(1.0, step=0.05)
    assert [t.task_id for t in n1.queued[outer_executor]] == [1]
    others = {e: [t.task_id for t in q] for e, q in n1.queued.items() if e != outer_executor}
    assert sorted(i for ids in others.values() for i in ids) == [2, 3]

    # the outer task ends: its executor holds nothing, and is fed again
    n1.auto_run = True
    h.advance(1.0, step=0.05)
    n1.auto_run = False
    h.tasks("s1", [None] * 8)
    h.advance(0.3, step=0.05)
    assert n1.queued[outer_executor], "fed again once it held no task"
    n1.auto_run = True
    h.advance(1.0, step=0.05)
    session = h.state.sessions["s1"]
    assert all(t.state is TaskState.Succeed and t.retry_count == 0 for t in session.tasks)
