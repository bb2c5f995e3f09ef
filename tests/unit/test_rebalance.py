"""Rebalancing through the pure controller: tasks an executor holds but has not started are
recalled when a sibling idles (a node joined a running session) or when the executor is
reclaimed for another session, and they run elsewhere once, with no retry counted."""

from __future__ import annotations

import pytest

from protocol import backend as be
from protocol import frontend as fe
from protocol.types import ApplicationSpec, TaskState
from tests.unit.core_harness import FakeNode, Harness

pytestmark = pytest.mark.timeout(30)


def cluster(**config: object) -> tuple[Harness, FakeNode]:
    h = Harness(**config)
    h.request(fe.RegisterApplication(name="flmping", spec=ApplicationSpec(command="true")))
    n1 = h.add_node("n1", 1, auto_run=False)
    return h, n1


def recalls(node: FakeNode) -> list[be.RecallTasks]:
    return [c for c in node.commands if isinstance(c, be.RecallTasks)]


def queued(node: FakeNode) -> list[int]:
    return sorted(t.task_id for tasks in node.queued.values() for t in tasks)


def test_a_node_that_joins_a_running_session_gets_a_share_of_its_queued_tasks() -> None:
    """Breaks if the tasks dispatched before n2 joined stay queued on n1 while n2's executor,
    bound for that session, idles until n1 has worked through all of them."""
    h, n1 = cluster()
    h.session("s1")
    h.tasks("s1", [b"%d" % i for i in range(6)])
    h.advance(0.5, step=0.05)
    assert queued(n1) == [1, 2, 3, 4, 5, 6]
    n2 = h.add_node("n2", 1, auto_run=False)
    h.advance(0.3, step=0.05)  # n2's executor is bound and idle, not yet for `rebalance_after`
    assert recalls(n1) == []
    assert queued(n2) == []
    h.advance(0.5, step=0.05)
    (recall,) = recalls(n1)
    assert (recall.session_id, recall.count) == ("s1", 3)
    assert (queued(n1), queued(n2)) == ([1, 2, 3], [4, 5, 6])  # the last queued move
    assert h.ctl.counters["tasks_returned"] == 3
    assert h.ctl.counters["tasks_retried"] == 0
    for node in (n1, n2):
        node.auto_run = True
    h.advance(1.0, step=0.05)
    tasks = h.state.sessions["s1"].tasks
    assert [(t.state, t.retry_count, t.output) for t in tasks] == [(TaskState.Succeed, 0, b"%d" % i) for i in range(6)]
    assert len(recalls(n1)) == 1
    assert recalls(n2) == []


def test_a_recall_answered_with_nothing_is_not_repeated_at_once() -> None:
    """Breaks if an executor manager that can spare nothing (its instance holds the tasks) is
    asked again on every scheduling pass."""
    h, n1 = cluster(rebalance_after=0.5)
    h.session("s1")
    h.tasks("s1", [None] * 4)
    h.advance(0.5, step=0.05)
    n1.queued = {e: [] for e in n1.queued}  # all given to the instance, as far as the SM knows: 4 held
    h.add_node("n2", 1, auto_run=False)
    h.advance(1.0, step=0.05)
    assert 1 <= len(recalls(n1)) <= 2  # once, then not before another rebalance_after (0.5 s)
    assert h.ctl.counters["tasks_returned"] == 0


def test_a_reclaimed_executor_hands_back_what_it_has_not_started() -> None:
    """Breaks if an executor reclaimed for a session of higher priority keeps working through
    the queue of its old session (up to dispatch_depth tasks) before it can be given away."""
    h, n1 = cluster()
    h.session("low", priority=0)
    h.tasks("low", [None] * 10)
    h.advance(0.5, step=0.05)
    assert len(queued(n1)) == 10
    h.session("high", priority=10)
    h.tasks("high", [b"x"])
    h.advance(0.3, step=0.05)
    (recall,) = recalls(n1)
    assert (recall.session_id, recall.count) == ("low", 9)
    assert queued(n1) == [1]  # the one running stays
    low = h.state.sessions["low"]
    assert len(low.pending) == 9
    assert all(t.retry_count == 0 for t in low.tasks)
    n1.auto_run = True
    h.advance(1.0, step=0.05)
    assert [t.state for t in h.state.sessions["high"].tasks] == [TaskState.Succeed]
    assert [t.state for t in low.tasks] == [TaskState.Succeed] + [TaskState.Pending] * 9  # ran once


def assert_n2_gets_nothing(h: Harness, n1: FakeNode) -> None:
    """Six tasks queued on n1, n2 joins and idles 2 s: no recall, n1 keeps all six."""
    h.session("s1")
    h.tasks("s1", [None] * 6)
    h.advance(0.5, step=0.05)
    n2 = h.add_node("n2", 1, auto_run=False)
    h.advance(2.0, step=0.05)
    assert recalls(n1) == []
    assert queued(n2) == []
    assert len(queued(n1)) == 6


def test_no_recall_when_rebalancing_is_off() -> None:
    """Breaks if tasks are recalled for a joining node although rebalance_after is 0 (off)."""
    assert_n2_gets_nothing(*cluster(rebalance_after=0.0))


def test_an_executor_manager_that_does_not_list_recall_gets_none() -> None:
    """Breaks if `RecallTasks` goes to an older executor manager (during an upgrade), which would
    drop the whole frame it came in, with the launches beside it."""
    h = Harness()
    h.request(fe.RegisterApplication(name="flmping", spec=ApplicationSpec(command="true")))
    assert_n2_gets_nothing(h, h.add_node("n1", 1, auto_run=False, features=[]))
