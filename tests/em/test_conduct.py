"""What an instance may say at each stage (conduct.py): every message type against every stage,
and the per-session strikes that stop a node binding a session whose instances misbehave.
Pure logic, no process: the integration side is tests/security/test_instance_misbehaviour.py."""

from __future__ import annotations

import re

import pytest

from flamed.executor_manager import conduct
from flamed.executor_manager.conduct import Misbehaviour, Stage, Strikes
from flamed.executor_manager.executors import InstanceRef, LocalExecutor, Phase
from protocol import instance as im
from protocol.types import ResourceRequirement
from tests.em.contexts import session, tasks

PID = 4242

MESSAGES: dict[str, im.InstanceMessage] = {
    "ready": im.InstanceReady(executor_id="e1", protocol_version=1, pid=PID),
    "entered": im.SessionEntered(ok=True),
    "results": im.TaskResults(results=[im.TaskOutcome(task_id=1, attempt=1, ok=True)]),
    "left": im.SessionLeft(ok=True),
}
STAGES = {
    Stage.Starting: (Phase.Binding, False),
    Stage.Entering: (Phase.Binding, True),
    Stage.Serving: (Phase.Bound, True),
    Stage.Leaving: (Phase.Unbinding, True),
}
LEGAL = {
    Stage.Starting: {"ready"},
    Stage.Entering: {"entered"},
    Stage.Serving: {"results"},
    Stage.Leaving: {"ready", "entered", "results", "left"},
}


def executor_in(stage: Stage) -> LocalExecutor:
    phase, ready = STAGES[stage]
    executor = LocalExecutor("e1", ResourceRequirement(), phase=phase, session=session("s1"), ready=ready)
    executor.instance = InstanceRef(number=1, pid=PID)  # no process: only its pid is read
    executor.in_flight.extend(tasks([b"a", b"b"]))  # tasks 1 and 2, attempt 1
    return executor


@pytest.mark.parametrize("stage", list(Stage))
@pytest.mark.parametrize("name", list(MESSAGES))
def test_each_message_is_legal_only_where_the_table_says(stage: Stage, name: str) -> None:
    """Breaks if a stage accepts a message the instance protocol does not allow there (an
    instance could then drive its executor out of order), or refuses one it allows."""
    executor = executor_in(stage)
    if name in LEGAL[stage]:
        assert conduct.check(executor, MESSAGES[name]) is stage
    else:
        with pytest.raises(Misbehaviour, match=f"sent {type(MESSAGES[name]).__name__}"):
            conduct.check(executor, MESSAGES[name])


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (im.InstanceReady(executor_id="e2", protocol_version=1, pid=PID), "for executor 'e2'"),
        (im.InstanceReady(executor_id="e1", protocol_version=1, pid=PID + 1), f"as pid {PID + 1}"),
    ],
)
def test_instance_ready_must_name_its_own_executor_and_pid(message: im.InstanceReady, words: str) -> None:
    """An instance that says it is another executor, or another process, is refused."""
    with pytest.raises(Misbehaviour, match=re.escape(words)):
        conduct.check(executor_in(Stage.Starting), message)


@pytest.mark.parametrize(
    ("results", "words"),
    [
        ([], "without a result"),
        ([(3, 1)], "task 3 (attempt 1) it does not hold"),
        ([(1, 2)], "task 1 (attempt 2) it does not hold"),
        ([(1, 1), (1, 1)], "task 1 (attempt 1) it does not hold"),  # the same result twice
        ([(1, 1), (2, 1), (3, 1)], "task 3 (attempt 1) it does not hold"),  # more than it holds
    ],
)
def test_results_count_only_for_tasks_held_once_each(results: list[tuple[int, int]], words: str) -> None:
    """A flood is a message it may not send: results for tasks not held, twice, or none."""
    outcomes = [im.TaskOutcome(task_id=t, attempt=a, ok=True) for t, a in results]
    with pytest.raises(Misbehaviour, match=re.escape(words)):
        conduct.check(executor_in(Stage.Serving), im.TaskResults(results=outcomes))


def test_results_in_any_order_for_held_tasks_are_legal() -> None:
    """Breaks if an instance's results for tasks it holds are refused because they come in another order than
    the tasks were given."""
    outcomes = [im.TaskOutcome(task_id=2, attempt=1, ok=True), im.TaskOutcome(task_id=1, attempt=1, ok=False)]
    assert conduct.check(executor_in(Stage.Serving), im.TaskResults(results=outcomes)) is Stage.Serving


@pytest.mark.parametrize("results", [[(1, 1)], [(1, 1), (2, 1)]])
def test_results_for_the_oldest_tasks_in_order_are_legal(results: list[tuple[int, int]]) -> None:
    """The usual message (results of the oldest tasks held, in the order they were given) is
    checked on a shortcut; breaks if the shortcut refuses it."""
    outcomes = [im.TaskOutcome(task_id=t, attempt=a, ok=True) for t, a in results]
    assert conduct.check(executor_in(Stage.Serving), im.TaskResults(results=outcomes)) is Stage.Serving


def test_strikes_refuse_a_session_after_the_limit_and_stay_bounded() -> None:
    """Breaks if a session is refused before its third kill, not after it, or if the record of
    sessions grows without a bound (a tenant could make up session ids forever)."""
    strikes = Strikes(limit=3, capacity=2)
    for kill in range(1, 4):
        assert strikes.refusal("s1") is None
        strikes.record("s1", f"kill {kill}")
    refusal = strikes.refusal("s1")
    assert refusal is not None
    assert "3 times" in refusal
    assert "(last: kill 3)" in refusal
    strikes.record("s2", "x")
    strikes.record("s3", "x")  # the capacity is 2: the least recently struck (s1) is forgotten
    assert strikes.refusal("s1") is None
    assert len(strikes._kills) == 2
