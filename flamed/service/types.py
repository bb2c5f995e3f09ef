"""What a service sees: the contexts handed to its callbacks, and the `FlameService` base."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

#: flamepy's type aliases: a task's input and output and a session's common data are bytes.
TaskInput = bytes
TaskOutput = bytes
CommonData = bytes


@dataclass(frozen=True)
class ApplicationContext:
    name: str
    image: str | None = None
    command: str | None = None
    working_directory: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class SessionContext:
    session_id: str
    application: ApplicationContext
    _common_data: bytes | None = field(default=None, repr=False)

    def common_data(self) -> bytes | None:
        """The session's common data as the client gave it (None if it gave none)."""
        return self._common_data


@dataclass(frozen=True)
class TaskContext:
    task_id: str
    session_id: str
    input: bytes | None = None


_new = object.__new__


def task_context(task_id: str, session_id: str, input: bytes | None) -> TaskContext:
    """`TaskContext(task_id, session_id, input)` for the runner, at a third of the cost: a
    frozen dataclass's __init__ sets each field through `object.__setattr__`, which is most of
    the instance's own CPU per no-op task; this fills the new object's fields at once. The
    result is the same frozen value (equal, same hash and repr; assigning to it still raises)."""
    context: TaskContext = _new(TaskContext)
    fields = context.__dict__
    fields["task_id"] = task_id
    fields["session_id"] = session_id
    fields["input"] = input
    return context


class FlameService(abc.ABC):
    """Subclass and pass an instance to `flamed.service.run`.

    Callbacks run one at a time on the main thread: `on_session_enter` once, then
    `on_task_invoke` for each task in order, then `on_session_leave`. An exception raised by
    `on_task_invoke` fails that task with the exception's type and text; the instance goes on.
    """

    @abc.abstractmethod
    def on_session_enter(self, context: SessionContext) -> None: ...

    @abc.abstractmethod
    def on_task_invoke(self, context: TaskContext) -> bytes | None: ...

    @abc.abstractmethod
    def on_session_leave(self) -> None: ...
