"""The instance runner's handling of one task (flamed/service/runner.py `invoke`): what each
kind of answer from a service becomes, and the cheap `task_context` it hands the service."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from flamed.service.runner import _Runner
from flamed.service.types import FlameService, SessionContext, TaskContext, task_context
from protocol import backend as be

pytestmark = pytest.mark.timeout(30)


class Answers(FlameService):
    """Answers each task with what its input names."""

    def __init__(self) -> None:
        self.seen: list[TaskContext] = []

    def on_session_enter(self, context: SessionContext) -> None:
        pass

    def on_session_leave(self) -> None:
        pass

    def on_task_invoke(self, context: TaskContext) -> bytes | None:
        self.seen.append(context)
        answers: dict[bytes | None, object] = {
            b"bytes": b"out",
            b"subclass": Subclass(b"sub"),
            b"bytearray": bytearray(b"ba"),
            b"memoryview": memoryview(b"mv"),
            b"none": None,
            b"str": "not bytes",
        }
        if context.input == b"raise":
            raise ValueError("boom")
        return answers[context.input]  # type: ignore[return-value]  # wrong types on purpose


class Subclass(bytes):
    pass


def test_task_context_is_the_same_frozen_value_as_the_dataclass() -> None:
    """Breaks if the runner's shortcut builds something a service could tell from
    TaskContext(...): another type, other fields, a mutable one."""
    fast = task_context("7", "s1", b"in")
    slow = TaskContext(task_id="7", session_id="s1", input=b"in")
    assert type(fast) is TaskContext
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert repr(fast) == repr(slow)
    assert dataclasses.asdict(fast) == {"task_id": "7", "session_id": "s1", "input": b"in"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.input = b"changed"  # type: ignore[misc]  # frozen on purpose


def test_each_kind_of_answer_becomes_its_outcome(tmp_path: Path) -> None:
    """bytes (and a subclass), bytearray and memoryview are outputs as bytes, None is no
    output; any other type, or an exception, fails the task with its type and text."""
    service = Answers()
    runner = _Runner(service, f"ipc://{tmp_path}/em", "e1", "token")
    try:
        runner.session_id = "s1"
        inputs = [b"bytes", b"subclass", b"bytearray", b"memoryview", b"none", b"str", b"raise"]
        for task_id, data in enumerate(inputs, start=1):
            runner.invoke(be.TaskAssignment(task_id=task_id, attempt=1, input=data))
    finally:
        runner.sock.close(linger=0)
    got = [(o.task_id, o.ok, o.output, o.message) for o in runner.results]
    assert got == [
        (1, True, b"out", None),
        (2, True, b"sub", None),
        (3, True, b"ba", None),
        (4, True, b"mv", None),
        (5, True, None, None),
        (6, False, None, "TypeError: on_task_invoke must return bytes or None, not str"),
        (7, False, None, "ValueError: boom"),
    ]
    assert all(type(o.output) is bytes for o in runner.results if o.output is not None)
    assert [c.task_id for c in service.seen] == [str(i) for i in range(1, 8)]
    assert {c.session_id for c in service.seen} == {"s1"}
