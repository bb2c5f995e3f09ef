"""A cold session's first tasks take no round trip the session manager can do without (issue 21).

Through the pure controller with fake nodes: an executor created for a session is bound in the
same turn (CreateExecutor, BindExecutor in one message: no wait for ExecutorCreated), and a
session with no executor of its own yet gets its first tasks with the bind (the node queues
them until the instance entered the session; no wait for ExecutorBound). A session that has
executors already feeds a new one only once it is bound; tasks launched with a bind that fails
go back to Pending unstarted.
"""

from __future__ import annotations

import pytest

from protocol import backend as be
from protocol import frontend as fe
from protocol.types import ApplicationSpec, ExecutorState, TaskState
from tests.unit.core_harness import FakeNode, Harness

pytestmark = pytest.mark.timeout(30)


def cluster(**config: object) -> Harness:
    h = Harness(**config)
    h.request(fe.RegisterApplication(name="flmping", spec=ApplicationSpec(command="true")))
    return h


def commands_of(node: FakeNode, *kinds: type[be.ExecutorCommand]) -> list[be.ExecutorCommand]:
    return [c for c in node.commands if isinstance(c, kinds)]


def test_a_new_executor_is_bound_in_the_turn_it_is_created_and_gets_the_first_tasks_with_it() -> None:
    """Without the change: CreateExecutor went out alone, BindExecutor after ExecutorCreated came
    back, LaunchTasks after ExecutorBound came back (three session-manager turns and fsyncs)."""
    h = cluster()
    node = h.add_node("n1", 2, auto_run=False)
    h.session("s1")
    turns_before = len(h.records)
    node.commands.clear()
    h.tasks("s1", [b"a"])
    kinds = [type(c) for c in node.commands]
    assert kinds == [be.CreateExecutor, be.BindExecutor, be.LaunchTasks], kinds
    (create,) = commands_of(node, be.CreateExecutor)
    (bind,) = commands_of(node, be.BindExecutor)
    (launch,) = commands_of(node, be.LaunchTasks)
    assert isinstance(launch, be.LaunchTasks)
    assert create.executor_id == bind.executor_id == launch.executor_id
    assert [t.input for t in launch.tasks] == [b"a"]
    assert len(h.records) > turns_before
    executor = h.state.executors[create.executor_id]
    assert executor.state is ExecutorState.Bound  # the fake node answered Created, then Bound
    assert h.ctl.counters.get("stale_reports", 0) == 0  # ExecutorCreated of a Binding executor is expected
    node.run_tasks()
    h.pump()
    assert h.task_state("s1", 1) is TaskState.Succeed


def test_the_first_tasks_are_shared_among_the_executors_starting_for_the_session() -> None:
    """Two executors started at once for 100 tasks: each gets its share with its bind, not the
    first one all (at most dispatch_depth + 1 each)."""
    h = cluster(dispatch_depth=64)
    node = h.add_node("n1", 2, auto_run=False)
    h.session("s1")
    h.tasks("s1", [b"x"] * 100)
    by_executor: dict[str, int] = {}
    for launch in node.commands:
        if isinstance(launch, be.LaunchTasks):
            by_executor[launch.executor_id] = by_executor.get(launch.executor_id, 0) + len(launch.tasks)
    assert len(commands_of(node, be.BindExecutor)) == 2
    assert sorted(by_executor.values()) == [50, 50], by_executor
    node.run_tasks()
    h.pump()
    node.run_tasks()
    h.pump()
    assert all(t.state is TaskState.Succeed for t in h.state.sessions["s1"].tasks)


def test_a_session_with_an_executor_feeds_a_new_one_only_once_it_is_bound() -> None:
    """A bound sibling may finish the work before a new instance has started: the new executor
    gets no tasks with its bind, only after its ExecutorBound came back."""
    h = cluster(dispatch_depth=1)
    small = h.add_node("n1", 1, auto_run=False)
    h.session("s1")
    h.tasks("s1", [b"x"] * 10)
    assert len(commands_of(small, be.LaunchTasks)) == 1
    big = h.add_node("n2", 1, auto_run=False)
    h.advance(0.2)
    kinds = [type(c) for c in big.commands]
    assert kinds[:2] == [be.CreateExecutor, be.BindExecutor], kinds
    assert be.LaunchTasks in kinds
    (new,) = {c.executor_id for c in big.commands}
    changes = [
        (type(x).__name__, getattr(x, "trigger", None)) for x in h.records if getattr(x, "executor_id", None) == new
    ]
    bound = changes.index(("ExecutorChanged", "bound"))
    assert ("TasksDispatched", None) not in changes[:bound], changes  # fed once bound, not with the bind


def test_tasks_launched_with_a_failed_bind_are_pending_again_before_the_retry_limit_decides() -> None:
    """At the limit the pending tasks fail with the bind failure's reason; without putting the
    tasks launched with the bind back first, they were still on the executor then, and came
    back Pending afterwards (a retry counted) in a session whose binds are paused: stuck."""
    h = cluster(session_bind_retry_limit=1)
    node = h.add_node("n1", 1, auto_run=False, bind_error="cannot start")
    h.session("s1")
    h.tasks("s1", [b"a"])
    assert commands_of(node, be.LaunchTasks)  # launched with the (failing) bind
    task = h.state.sessions["s1"].tasks[0]
    assert task.state is TaskState.Failed, task
    assert task.retry_count == 0
    assert "cannot start" in (task.message or ""), task.message


def test_a_node_that_does_not_say_early_bind_gets_the_bind_only_once_it_created_the_executor() -> None:
    """An executor manager without `early-bind` (an older version, or a peer that never answers
    ExecutorCreated) would get a bind, and with it the session's data, for an executor it never
    said it created."""
    h = cluster()
    node = h.add_node("n1", 1, auto_run=False, features=["recall", "remove-application"])
    h.session("s1")
    h.tasks("s1", [b"a"])
    (create,) = commands_of(node, be.CreateExecutor)
    changes = [getattr(x, "trigger", None) for x in h.records if getattr(x, "executor_id", None) == create.executor_id]
    assert changes.index("created") < changes.index("bind"), changes
    node.run_tasks()
    h.pump()
    assert h.task_state("s1", 1) is TaskState.Succeed
