"""How many tasks the executor manager keeps on an instance (core.py `pump`), driven through
the pure core: what it decides to send is read from its effects, no socket or process."""

from __future__ import annotations

import pytest

from flamed.executor_manager import instance_window
from flamed.executor_manager.core import ExecutorsCore
from flamed.executor_manager.effects import Send
from flamed.executor_manager.executors import InstanceRef, LocalExecutor, Phase
from protocol import instance as im
from protocol.types import ResourceRequirement
from tests.em.contexts import session, tasks

pytestmark = pytest.mark.timeout(10)


@pytest.fixture
def setup() -> tuple[ExecutorsCore, LocalExecutor]:
    holder = ExecutorsCore(stop_timeout=1.0)
    executor = LocalExecutor("e1", ResourceRequirement(), phase=Phase.Bound, session=session("s1"))
    executor.instance = InstanceRef(number=1, pid=4242)
    holder.executors["e1"] = executor
    return holder, executor


def invoked(holder: ExecutorsCore) -> list[int]:
    """Task ids of the InvokeTasks the instance is sent (one message expected)."""
    sent = [e for e in holder.take_effects() if isinstance(e, Send)]
    assert len(sent) == 1, "one InvokeTasks per top-up"
    message = sent[0].message
    assert isinstance(message, im.InvokeTasks)
    return [t.task_id for t in message.tasks]


def nothing_sent(holder: ExecutorsCore) -> bool:
    return not holder.take_effects()


def test_window_follows_task_pace_and_suspects(setup: tuple[ExecutorsCore, LocalExecutor]) -> None:
    """Unknown or slow tasks: the running one and the next (a drain waits for little). Long
    tasks: the running one only. Fast tasks: a deep window in one message, topped up at half.
    A suspect near: one at a time. Breaks if fast tasks go one message per task again, or
    slow or long tasks pile up on an instance."""
    holder, executor = setup
    executor.queue.extend(tasks([b"x"] * (3 * instance_window.INSTANCE_WINDOW)))  # enough for every step
    holder.pump(executor)
    assert invoked(holder) == [1, 2]

    executor.in_flight.clear()
    executor.pace = 0.05  # slow tasks
    holder.pump(executor)
    assert invoked(holder) == [3, 4]

    executor.in_flight.clear()
    executor.pace = 1.0  # long tasks: the running one only, the next stays recallable
    holder.pump(executor)
    assert invoked(holder) == [5]
    holder.pump(executor)  # nothing more until its result
    assert nothing_sent(holder)

    executor.in_flight.clear()
    executor.pace = 0.0001  # fast tasks
    holder.pump(executor)
    window = instance_window.INSTANCE_WINDOW
    assert invoked(holder) == list(range(6, 6 + window))
    holder.pump(executor)  # full: nothing more until half of it is done
    assert nothing_sent(holder)
    for _ in range(window // 2):
        executor.in_flight.popleft()
    holder.pump(executor)
    assert invoked(holder) == list(range(6 + window, 6 + window + window // 2))

    executor.in_flight.clear()
    next_id = executor.queue[0].task_id
    holder.suspects.add(("s1", next_id + 3))
    holder.pump(executor)
    assert invoked(holder) == [next_id]
