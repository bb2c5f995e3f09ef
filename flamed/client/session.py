"""`Session`: a session's status plus the calls that act on it (flamepy's Session).

`run(input)` returns a `concurrent.futures.Future` completed by the I/O thread when the task's
`TaskUpdates` say it is terminal; nothing else waits per task. Results: the output bytes on
Succeed; FlameError(INTERNAL, <the failure message>) on Failed; FlameError(INVALID_STATE, ...)
on Cancelled (the session was closed with the task pending).

A session reaches its session manager through the connection that fetched it, seen here only
as a `Requester` (a `Connection` is one), so this module never imports the connection's.
"""

from __future__ import annotations

import datetime
import queue
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from flamed.client.errors import FlameError, FlameErrorCode
from flamed.client.futures import TaskFuture
from flamed.client.io_thread import IoThread
from flamed.client.types import SessionState, Task, TaskState, task_from_wire, to_datetime
from protocol import frontend as fe
from protocol import types as wire

R = TypeVar("R", bound=fe.Message)


class Requester(Protocol):
    """What a `Session` needs of its connection: the I/O thread and blocking requests."""

    @property
    def io(self) -> IoThread: ...

    def wait(self, future: Future[Any]) -> Any:
        """The result of an I/O-thread future (raises its FlameError)."""
        ...

    def request(self, message: fe.Message, reply_type: type[R]) -> R:
        """Send `message`, wait for its reply, check that it is a `reply_type`."""
        ...


class _QueueSink:
    """Feeds `watch_task` from the I/O thread; skips repeats of the same state."""

    __slots__ = ("abandoned", "last", "queue")

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[wire.Task | BaseException] = queue.SimpleQueue()
        self.last: wire.TaskState | None = None
        self.abandoned = False

    def update(self, task: wire.Task) -> bool:
        if self.abandoned:
            return True
        if task.state != self.last:
            self.last = task.state
            self.queue.put(task)
        return task.state.is_terminal

    def fail(self, error: BaseException) -> None:
        self.queue.put(error)


class Session:
    """A session as last seen, bound to the connection that fetched it."""

    def __init__(self, connection: Requester, session: wire.Session) -> None:
        self._connection = connection
        self._refresh(session)

    def _refresh(self, session: wire.Session) -> None:
        self.id: str = session.id
        self.spec: wire.SessionSpec = session.spec
        self.application: str = session.spec.application
        self.state = SessionState(session.state)
        self.creation_time: datetime.datetime = to_datetime(session.creation_time)
        self.completion_time: datetime.datetime | None = (
            to_datetime(session.completion_time) if session.completion_time is not None else None
        )
        self.pending: int = session.pending
        self.running: int = session.running
        self.succeed: int = session.succeed
        self.failed: int = session.failed
        self.cancelled: int = session.cancelled
        self.events: list[wire.Event] = list(session.events)
        self.min_instances: int = session.spec.min_instances
        self.max_instances: int | None = session.spec.max_instances
        self.priority: int = session.spec.priority
        self.resreq: wire.ResourceRequirement | None = session.spec.resreq

    def __repr__(self) -> str:
        return f"Session(id={self.id!r}, application={self.application!r}, state={self.state.value})"

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def common_data(self) -> bytes | None:
        return self.spec.common_data

    # ------------------------------------------------------------ tasks

    def create_task(self, input: bytes | None) -> Task:
        return self.create_tasks([input])[0]

    def create_tasks(self, inputs: Iterable[bytes | None]) -> list[Task]:
        """Create one task per input, in order; returns them Pending."""
        inputs = [_check_input(i) for i in inputs]
        if not inputs:
            return []
        ids: list[int] = self._connection.wait(self._connection.io.create_tasks(self.id, inputs))
        now = to_datetime(int(time.time() * 1000))
        return [
            Task(id=i, session_id=self.id, state=TaskState.Pending, creation_time=now, input=data)
            for i, data in zip(ids, inputs, strict=True)
        ]

    def get_task(self, task_id: int | str) -> Task:
        reply = self._connection.request(fe.GetTask(session_id=self.id, task_id=int(task_id)), fe.TaskReply)
        return task_from_wire(reply.task)

    def list_tasks(self) -> Iterator[Task]:
        """Every task of the session, in id order, fetched one page at a time as the iterator
        is consumed (the first page at once, so that an unknown session raises here)."""
        return (task_from_wire(t) for t in iter_wire_tasks(self._connection, self.id))

    def watch_task(self, task_id: int | str, timeout: float | None = None) -> Iterator[Task]:
        """Yield the task's states as they change, ending with its terminal state; raises
        TimeoutError if `timeout` seconds pass first."""
        sink = _QueueSink()
        self._connection.io.watch(self.id, {int(task_id): [sink]})
        return self._watch(sink, timeout)

    def _watch(self, sink: _QueueSink, timeout: float | None) -> Iterator[Task]:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    item = sink.queue.get(timeout=wait)
                except queue.Empty:
                    raise TimeoutError(f"task watch timed out after {timeout:g}s") from None
                if isinstance(item, BaseException):
                    raise item
                yield task_from_wire(item)
                if item.state.is_terminal:
                    return
        finally:
            sink.abandoned = True

    def run(self, input: bytes | None) -> Future[bytes | None]:
        """Create a task and return a future of its output (see the module docstring). Once the
        task exists, the future's `task_id` attribute holds its id."""
        return self._connection.io.run(self.id, _check_input(input))

    def run_many(self, inputs: Iterable[bytes | None]) -> list[Future[bytes | None]]:
        """`run` for many inputs in one request."""
        checked = [_check_input(i) for i in inputs]
        futures: list[Future[bytes | None]] = [TaskFuture(self.id) for _ in checked]
        if checked:
            self._connection.io.create_tasks(self.id, checked, list(futures))
        return futures

    def invoke(self, input: bytes | None) -> bytes | None:
        return self.run(input).result()

    # ------------------------------------------------------------ lifecycle

    def update(self) -> Session:
        """Fetch the session's current status into this object."""
        self._refresh(self._connection.request(fe.GetSession(session_id=self.id), fe.SessionReply).session)
        return self

    def close(self) -> None:
        """Close the session (idempotent): no new tasks; pending tasks are cancelled."""
        self._refresh(self._connection.request(fe.CloseSession(session_id=self.id), fe.SessionReply).session)


def iter_wire_tasks(connection: Requester, session_id: str, include_data: bool = True) -> Iterator[wire.Task]:
    """The wire tasks of a session, a `ListTasks` page at a time: the first page is fetched
    now, each next one when the iterator reaches it (the server says where it starts)."""
    reply = connection.request(fe.ListTasks(session_id=session_id, include_data=include_data), fe.TasksReply)
    return _pages(connection, session_id, include_data, reply)


def _pages(connection: Requester, session_id: str, include_data: bool, reply: fe.TasksReply) -> Iterator[wire.Task]:
    cursor = 1
    while True:
        yield from reply.tasks
        if not reply.next_cursor:
            return
        if reply.next_cursor <= cursor:
            raise FlameError(
                FlameErrorCode.INTERNAL, f"session manager sent cursor {reply.next_cursor} after {cursor}; giving up"
            )
        cursor = reply.next_cursor
        request = fe.ListTasks(session_id=session_id, include_data=include_data, cursor=cursor)
        reply = connection.request(request, fe.TasksReply)


def _check_input(data: object) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise FlameError(FlameErrorCode.INVALID_ARGUMENT, f"a task input must be bytes or None, not {type(data).__name__}")
