"""How `InFlight` feeds `TaskUpdates` to the sinks of a watch (flamed/client/inflight.py): the
one-sink path taken for every `run()` future must keep the rules of the general one."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from flamed.client.batching import hand_out_ids
from flamed.client.commands import Create
from flamed.client.errors import FlameError
from flamed.client.futures import TaskFuture
from flamed.client.inflight import ActiveWatch, InFlight
from flamed.client.sinks import WatchSinks
from protocol import frontend as fe
from protocol.types import Task, TaskState


class Recorder:
    """A TaskSink that takes updates until it has seen `wants` of them."""

    def __init__(self, wants: int) -> None:
        self.wants = wants
        self.seen: list[TaskState] = []

    def update(self, task: Task) -> bool:
        self.seen.append(task.state)
        return len(self.seen) >= self.wants

    def fail(self, error: BaseException) -> None:
        raise AssertionError(f"no watch should fail here: {error}")


def push(inflight: InFlight, *tasks: Task) -> None:
    inflight.dispatch(fe.TaskUpdates(request_id=1, tasks=list(tasks)))


def task(task_id: int, state: TaskState, output: bytes | None = None) -> Task:
    return Task(id=task_id, session_id="s", state=state, output=output)


def test_a_lone_sink_stays_until_it_is_done_or_its_task_is_terminal() -> None:
    """Breaks if the one-sink fast path drops a sink that wants more updates, keeps one that
    said it is done, or keeps watching a task that reached a terminal state."""
    running, done_early, terminal = Recorder(wants=9), Recorder(wants=1), Recorder(wants=9)
    sinks: WatchSinks = {1: [running], 2: [done_early], 3: [terminal]}
    inflight = InFlight("ipc://test")
    inflight.watches[1] = ActiveWatch("s", sinks)
    push(inflight, task(1, TaskState.Running), task(2, TaskState.Running), task(3, TaskState.Running))
    assert sorted(sinks) == [1, 3], "task 2's sink said it was done"
    push(inflight, task(3, TaskState.Succeed, b"out"), task(2, TaskState.Succeed))
    assert sorted(sinks) == [1], "task 3 is terminal; task 2 is no longer followed"
    assert done_early.seen == [TaskState.Running]
    assert terminal.seen == [TaskState.Running, TaskState.Succeed]
    push(inflight, task(1, TaskState.Failed))
    assert 1 not in inflight.watches, "a watch with no sinks left is closed"


def test_run_futures_complete_once_and_a_cancelled_one_is_dropped_quietly() -> None:
    """Breaks if a `run()` future is not completed by its terminal update, or if one its caller
    cancelled raises in the I/O thread instead of being dropped."""
    done: Future[Any] = TaskFuture()
    cancelled: Future[Any] = TaskFuture()
    assert cancelled.cancel()
    inflight = InFlight("ipc://test")
    inflight.watches[1] = ActiveWatch("s", {1: [done], 2: [cancelled]})
    push(inflight, task(1, TaskState.Running), task(2, TaskState.Running))
    assert not done.done()
    push(inflight, task(1, TaskState.Succeed, b"out"), task(2, TaskState.Succeed, b"late"))
    assert done.result(timeout=0) == b"out"
    assert cancelled.cancelled()
    assert 1 not in inflight.watches


def test_a_run_future_is_followed_alone_not_in_a_list_of_one() -> None:
    """`hand_out_ids` gives each task its `run()` future alone (no one-element list per task)
    and the push completes it: Succeed with its output, Failed and Cancelled with a FlameError,
    a Running update leaving it pending."""
    futures: list[TaskFuture[Any]] = [TaskFuture("s") for _ in range(4)]
    part = Create("s", [b"a", b"b", b"c", b"d"], None, list(futures))
    sinks = hand_out_ids([part], [11, 12, 13, 14])
    assert sinks == dict(zip([11, 12, 13, 14], futures, strict=True))
    assert [f.task_id for f in futures] == [11, 12, 13, 14]
    inflight = InFlight("ipc://test")
    inflight.watches[1] = ActiveWatch("s", sinks)
    push(inflight, task(11, TaskState.Succeed, b"A"), task(12, TaskState.Running), task(13, TaskState.Failed))
    assert futures[0].result(timeout=0) == b"A"
    assert not futures[1].done()
    with pytest.raises(FlameError, match="without error message"):
        futures[2].result(timeout=0)
    push(inflight, task(14, TaskState.Cancelled), task(12, TaskState.Succeed, None))
    with pytest.raises(FlameError, match="cancelled"):
        futures[3].result(timeout=0)
    assert futures[1].result(timeout=0) is None
    assert 1 not in inflight.watches


def test_a_watch_that_fails_fails_lone_sinks_and_lists_alike() -> None:
    """A final push with tasks left fails every sink still followed, whether a task has one
    (not in a list) or several."""
    lone: TaskFuture[Any] = TaskFuture("s")
    pair: list[Future[Any]] = [Future(), Future()]
    inflight = InFlight("ipc://test")
    inflight.watches[1] = ActiveWatch("s", {1: lone, 2: list(pair)})
    inflight.dispatch(fe.TaskUpdates(request_id=1, tasks=[], final=True, reason="deleted"))
    for future in (lone, *pair):
        with pytest.raises(FlameError, match="deleted"):
            future.result(timeout=0)
