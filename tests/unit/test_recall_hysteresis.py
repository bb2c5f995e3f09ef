"""Rebalancing without churn (issue 16): tasks recalled to a sibling are not recalled straight
back, so a task's attempt does not climb with every rebalancing pass."""

from __future__ import annotations

import pytest

from protocol import backend as be
from protocol import frontend as fe
from protocol.types import ApplicationSpec, TaskState
from tests.unit.core_harness import FakeNode, Harness

pytestmark = pytest.mark.timeout(30)


def recalls(node: FakeNode) -> list[be.RecallTasks]:
    return [c for c in node.commands if isinstance(c, be.RecallTasks)]


def queued(node: FakeNode) -> list[int]:
    return sorted(t.task_id for tasks in node.queued.values() for t in tasks)


def test_tasks_recalled_to_a_sibling_are_not_recalled_back_when_the_first_executor_idles() -> None:
    """Breaks if the tasks n1 handed to n2 (which joined late) bounce back to n1 as soon as n1
    has worked through its own share and idles: every bounce puts them back to Pending and
    bumps their attempt (the soak saw attempts of 16-17 with retries <= 2) for no gain."""
    h = Harness()
    h.request(fe.RegisterApplication(name="flmping", spec=ApplicationSpec(command="true")))
    n1 = h.add_node("n1", 1, auto_run=False)
    h.session("s1")
    h.tasks("s1", [b"%d" % i for i in range(6)])
    h.advance(0.5, step=0.05)
    n2 = h.add_node("n2", 1, auto_run=False)
    h.advance(0.8, step=0.05)
    assert (queued(n1), queued(n2)) == ([1, 2, 3], [4, 5, 6])
    n1.auto_run = True  # n1 works through its share and idles; n2 is slow
    h.advance(2.0, step=0.05)
    assert recalls(n2) == [], "tasks just recalled to n2 were recalled back"
    tasks = h.state.sessions["s1"].tasks
    assert [t.attempt for t in list(tasks)[3:]] == [2, 2, 2]
    assert h.ctl.counters["task_recalls"] == 1
    n2.auto_run = True
    h.advance(1.0, step=0.05)
    assert all(t.state is TaskState.Succeed and t.retry_count == 0 for t in h.state.sessions["s1"].tasks)
