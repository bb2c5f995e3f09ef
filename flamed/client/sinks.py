"""Where task updates go: a `TaskSink` (e.g. a `watch_task` queue) or a `run()` future.

The I/O thread calls these for every `TaskUpdates` entry, so they must not block (nor should
the done-callbacks users add to `run()` futures: they run in the I/O thread). A `run()`
future is completed by `complete_run` without any per-task object besides the future.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, InvalidStateError
from typing import Any, Protocol

from flamed.client.errors import FlameError, FlameErrorCode
from protocol.types import Task, TaskState

#: Event code of a task's Failed event (the task state's Flame number).
TASK_FAILED_EVENT = 3


class TaskSink(Protocol):
    """Receives the updates of one watched task in the I/O thread; must not block."""

    def update(self, task: Task) -> bool:
        """Take an update; True when the sink wants no more."""
        ...

    def fail(self, error: BaseException) -> None:
        """The watch ended without a terminal state (error, timeout, connection closed)."""
        ...


Sink = TaskSink | Future[Any]
"""A task's updates go to a TaskSink, or complete a `run()` future (see `complete_run`)."""

TaskSinks = Sink | list[Sink]
"""Where one watched task's updates go: a sink alone (the common case, one `run()` future per
task, so a million tasks make no million one-element lists), or several."""

WatchSinks = dict[int, TaskSinks]
"""The sinks of a watch, by task id."""


def sinks_of(entry: TaskSinks) -> list[Sink]:
    """The sinks of one watched task as a list."""
    return entry if isinstance(entry, list) else [entry]


def failure_message(task: Task) -> str:
    """Why a task failed: its message, else its first Failed event (flamepy's wording)."""
    if task.message:
        return task.message
    for event in task.events:
        if event.code == TASK_FAILED_EVENT and event.message:
            return event.message
    return "Task failed without error message"


def complete_run(future: Future[Any], task: Task) -> bool:
    """Complete a `run()` future if `task` is terminal: its output on Succeed,
    FlameError(INTERNAL, <failure message>) on Failed, FlameError(INVALID_STATE) on Cancelled."""
    state = task.state
    if state is TaskState.Succeed:
        set_result(future, task.output)
    elif state is TaskState.Failed:
        set_exception(future, FlameError(FlameErrorCode.INTERNAL, failure_message(task)))
    elif state is TaskState.Cancelled:
        message = f"task {task.id} of session {task.session_id} was cancelled (the session was closed)"
        set_exception(future, FlameError(FlameErrorCode.INVALID_STATE, message))
    else:
        return False
    return True


def update_sink(sink: Sink, task: Task) -> bool:
    if isinstance(sink, Future):
        return complete_run(sink, task)
    return sink.update(task)


def fail_sink(sink: Sink, error: BaseException) -> None:
    if isinstance(sink, Future):
        set_exception(sink, error)
    else:
        sink.fail(error)


def set_result(future: Future[Any], value: object) -> None:
    """Complete `future` unless it is done already (a caller may have cancelled it)."""
    # not contextlib.suppress: it builds an object per call, and this runs once per task
    try:  # noqa: SIM105
        future.set_result(value)
    except InvalidStateError:
        pass


def set_exception(future: Future[Any], error: BaseException) -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)
