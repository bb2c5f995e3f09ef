"""Scheduling simulation: many fake nodes and sessions in one process on a fake clock.

Each executor finishes one task per scheduling cycle; the tests measure how fast a session
fills a free cluster (ramp-up, in cycles) and check that sessions end up with fair shares,
including when a new session arrives while an older one holds the whole cluster.
"""

from __future__ import annotations

from collections import Counter

import pytest

from protocol import backend as be
from protocol import frontend as fe
from protocol.types import ApplicationSpec, ExecutorState, TaskState
from tests.unit.core_harness import FakeNode, Harness

pytestmark = pytest.mark.timeout(60)

CYCLE = 0.1  # schedule_interval


def simulation(nodes: int, slots: int) -> Harness:
    h = Harness(schedule_interval=CYCLE, heartbeat_interval=1.0)
    h.request(fe.RegisterApplication(name="app", spec=ApplicationSpec(command="true", delay_release=0.0)))
    for i in range(nodes):
        h.add_node(f"n{i}", slots).auto_run = False
    return h


def finish_one_task_per_executor(node: FakeNode) -> None:
    for executor_id, queue in node.queued.items():
        if queue:
            task = queue.pop(0)
            node.outbox.append(
                be.TaskCompleted(
                    executor_id=executor_id,
                    session_id=node.executors.get(executor_id) or "",
                    task_id=task.task_id,
                    attempt=task.attempt,
                    state=TaskState.Succeed,
                )
            )


def cycle(h: Harness) -> None:
    for node in h.nodes.values():
        finish_one_task_per_executor(node)
    h.advance(CYCLE, step=CYCLE)


def held(h: Harness) -> Counter[str]:
    return Counter(
        e.session_id
        for e in h.state.executors.values()
        if e.state in (ExecutorState.Bound, ExecutorState.Binding) and e.session_id
    )


def test_a_session_fills_a_free_cluster_in_a_few_cycles() -> None:
    """Breaks if one session needs more than 5 scheduling cycles to fill 80 free slots."""
    h = simulation(nodes=20, slots=4)
    h.session("big", application="app")
    h.tasks("big", [None] * 10_000)
    cycles = 0
    while held(h)["big"] < 80:
        cycle(h)
        cycles += 1
        assert cycles <= 5, f"after {cycles} cycles only {held(h)['big']} of 80 executors"
    print(f"ramp-up: 80 executors in {cycles} cycles")


def test_equal_sessions_get_equal_shares() -> None:
    """Breaks if four equal sessions do not converge to equal shares, or the shares drift afterwards."""
    h = simulation(nodes=4, slots=4)
    for name in ("a", "b", "c", "d"):
        h.session(name, application="app")
        h.tasks(name, [None] * 2_000)
    cycles = 0
    while set(held(h)) != {"a", "b", "c", "d"} or max(held(h).values()) - min(held(h).values()) > 1:
        cycle(h)
        cycles += 1
        assert cycles <= 100, f"shares still unequal after {cycles} cycles: {held(h)}"
    print(f"drf: equal shares {dict(held(h))} after {cycles} cycles")
    for _ in range(20):
        cycle(h)
        assert max(held(h).values()) - min(held(h).values()) <= 1, f"shares drifted: {held(h)}"


def test_a_new_session_gets_its_share_back_from_one_holding_the_cluster() -> None:
    """Breaks if a new session never gets its fair share from one holding the cluster, or the old session's
    tasks fail or are cancelled on the way."""
    h = simulation(nodes=4, slots=4)
    h.session("old", application="app")
    h.tasks("old", [None] * 5_000)
    for _ in range(5):
        cycle(h)
    assert held(h)["old"] == 16
    h.session("new", application="app")
    h.tasks("new", [None] * 5_000)
    cycles = 0
    while abs(held(h)["new"] - held(h)["old"]) > 1:
        cycle(h)
        cycles += 1
        assert cycles <= 100, f"no fair share after {cycles} cycles: {held(h)}"
    print(f"rebalance: shares {dict(held(h))} after {cycles} cycles")
    states = [t.state for t in h.state.sessions["old"].tasks]
    assert TaskState.Failed not in states
    assert TaskState.Cancelled not in states


def test_higher_priority_takes_the_cluster_as_tasks_finish() -> None:
    """Breaks if a higher-priority session does not take every executor as the lower one's tasks finish."""
    h = simulation(nodes=2, slots=4)
    h.session("low", application="app")
    h.tasks("low", [None] * 5_000)
    for _ in range(5):
        cycle(h)
    h.session("high", application="app", priority=10)
    h.tasks("high", [None] * 5_000)
    cycles = 0
    while held(h)["high"] < 8:
        cycle(h)
        cycles += 1
        assert cycles <= 100, f"high priority still waiting after {cycles} cycles: {held(h)}"
    print(f"priority: high holds all 8 executors after {cycles} cycles")
