"""The executor manager's core when an instance's running task waits for a task of its own
session (`TaskWaiting`, issue 20): the tasks behind it go back to the session manager, tasks
launched while it waits are bounced, and the instance is fed again after the waiting task's
result. Pure, under a fake clock (tests/em/core_harness.py); tests/runner/test_recursive.py
shows the same end to end with real processes."""

from __future__ import annotations

import pytest

from flamed.executor_manager import effects as fx
from flamed.executor_manager.machines import Phase
from protocol import backend as be
from protocol import instance as im
from tests.em.contexts import of_type, tasks
from tests.em.core_harness import FakeShell

pytestmark = pytest.mark.timeout(10)


def bound_node(count: int) -> FakeShell:
    """e1 bound to s1 with tasks 1..count launched (1 and 2 on the instance)."""
    shell = FakeShell()
    shell.bind("e1", "s1", tasks([b"x"] * count))
    assert shell.invoked() == [1, 2]
    shell.take_reports()
    return shell


def withdrawn(shell: FakeShell) -> int:
    """How many TasksWithdrawn were sent to e1's instance since the last call."""
    count = sum(1 for e, m in shell.sent if e == "e1" and isinstance(m, im.TasksWithdrawn))
    shell.sent = [(e, m) for e, m in shell.sent if not isinstance(m, im.TasksWithdrawn)]
    return count


def test_a_waiting_task_hands_back_what_is_behind_it() -> None:
    """The running task waits for a task of its own session (`TaskWaiting`): the tasks behind
    it, on the instance and queued, go back to the session manager unstarted
    (`TasksReturned{waiting}`), the instance is told to drop them (`TasksWithdrawn`), tasks
    launched meanwhile go back at once, and the instance is fed again after the waiting task's
    result. Breaks if the task waited for can be queued behind the task that waits for it (a
    recursive service deadlocks)."""
    shell = bound_node(3)
    shell.say("e1", im.TaskWaiting(task_id=1, attempt=1))
    assert withdrawn(shell) == 1
    (returned,) = shell.take_reports()
    assert isinstance(returned, be.TasksReturned)
    assert returned.waiting
    assert [k.task_id for k in returned.unstarted] == [2, 3]
    executor = shell.core.executors["e1"]
    assert [t.task_id for t in executor.in_flight] == [1]
    assert not executor.queue

    shell.command(be.LaunchTasks(executor_id="e1", session_id="s1", tasks=tasks([b"y"], first=4)))
    (returned,) = shell.take_reports()
    assert isinstance(returned, be.TasksReturned)
    assert returned.waiting
    assert [k.task_id for k in returned.unstarted] == [4]
    assert shell.invoked() == []

    shell.results("e1", 1)
    assert executor.waiting is None
    assert len(of_type(be.TaskCompleted, shell.take_reports())) == 1
    shell.command(be.LaunchTasks(executor_id="e1", session_id="s1", tasks=tasks([b"z"], first=5)))
    assert shell.invoked() == [5]


def test_a_waiting_task_with_nothing_behind_it_still_tells_the_session_manager() -> None:
    """With no task behind the waiting one, `TasksReturned{waiting}` still goes (empty), so the
    session manager stops feeding the executor. Breaks if the session manager is told only when
    something came back (the next task it launches would be bounced once, not held back)."""
    shell = FakeShell()
    shell.bind("e1", "s1", tasks([b"x"]))
    assert shell.invoked() == [1]
    shell.take_reports()
    shell.say("e1", im.TaskWaiting(task_id=1, attempt=1))
    assert withdrawn(shell) == 1
    (returned,) = shell.take_reports()
    assert isinstance(returned, be.TasksReturned)
    assert returned.waiting
    assert returned.unstarted == []


@pytest.mark.parametrize(
    ("first", "what"),
    [((2, 1), "not the task it runs"), ((1, 2), "not the task it runs"), ((1, 1), "waits twice")],
)
def test_task_waiting_for_a_task_it_does_not_run_or_twice_is_misbehaviour(first: tuple[int, int], what: str) -> None:
    """`TaskWaiting` must name the running task (the oldest in flight, with its attempt), once:
    anything else is a broken protocol and the instance is killed, failing its running task.
    Breaks if an instance could make its executor manager hand back tasks it is running, or
    flood it with waits."""
    shell = bound_node(2)
    task_id, attempt = first
    if what == "waits twice":
        shell.say("e1", im.TaskWaiting(task_id=task_id, attempt=attempt))
        shell.take_reports()
    shell.say("e1", im.TaskWaiting(task_id=task_id, attempt=attempt))
    assert shell.signals[0] == ("e1", fx.Sig.KILL)
    assert shell.disowned == ["e1"]
    (failed,) = of_type(be.TaskCompleted, shell.take_reports())
    assert failed.task_id == 1
    assert what in (failed.message or "")


def test_task_waiting_is_answered_while_the_instance_is_stopped() -> None:
    """An instance being stopped (a drain lets its running task finish) still gets
    `TasksWithdrawn` for its `TaskWaiting`, and what it held behind the task is handed back;
    a wrong name there is answered too and withdraws nothing. Breaks if the instance blocks for
    the answer until it is killed, losing its running task."""
    shell = bound_node(2)
    shell.command(be.UnbindExecutor(executor_id="e1"))
    assert shell.core.executors["e1"].phase is Phase.Unbinding
    shell.take_reports()
    shell.say("e1", im.TaskWaiting(task_id=2, attempt=1))
    assert withdrawn(shell) == 1
    assert shell.take_reports() == []
    shell.say("e1", im.TaskWaiting(task_id=1, attempt=1))
    assert withdrawn(shell) == 1
    (returned,) = shell.take_reports()
    assert isinstance(returned, be.TasksReturned)
    assert returned.waiting
    assert [k.task_id for k in returned.unstarted] == [2]
    assert shell.signals == [], "not killed for it"
