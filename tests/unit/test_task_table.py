"""The task columns (`flamed.core.tasks.TaskTable`, issue 21's compact task records) against a
plain model: one `TaskEntry` per task, changed field by field as `apply` used to.

What would break: a read of a task (GetTask, ListTasks, watches) that differs from what was
recorded (an input or output of another task after a cut or a rewrite of the output buffer,
a lost message, retry event or None), or a snapshot of the columns that does not restore them."""

from __future__ import annotations

import random

import msgspec
import pytest

from flamed.core import tasks as tasks_module
from flamed.core.machines import InvalidTransition
from flamed.core.machines.task import TaskTrigger
from flamed.core.records import TaskFinish
from flamed.core.tasks import TaskColumnsSnap, TaskEntry, TaskTable
from flamed.core.views import task_view
from protocol.types import Event, TaskState

pytestmark = pytest.mark.timeout(60)

_snap_codec = msgspec.msgpack.Decoder(TaskColumnsSnap)


class Model:
    """The reference: a dict of `TaskEntry` values."""

    def __init__(self) -> None:
        self.tasks: dict[int, TaskEntry] = {}
        self.base = 0

    def check(self, table: TaskTable) -> None:
        assert table.count == len(self.tasks)
        for outside in (0, -1, len(self.tasks) + 1):
            assert not table.held(outside)
            assert not table.finished(outside)
            assert table.pushed(outside, "s", True) is None
        for task_id, task in self.tasks.items():
            got = table.get(task_id) if task_id > self.base else None
            expected = None if task_id <= self.base or task.id == 0 else task
            assert got == expected, task_id
            # the reads that build nothing (a watch asks them of every task that changed)
            assert table.held(task_id) == (expected is not None), task_id
            assert table.finished(task_id) == (expected is not None and expected.state.is_terminal), task_id
            for data in (True, False):  # a watch push's view, built from the columns in one step
                view = None if expected is None else task_view("s", expected, include_data=data, include_events=False)
                assert table.pushed(task_id, "s", data) == view, task_id
            if expected is not None:
                assert table.attempt_and_input(task_id) == (task.attempt, task.input)
                running = task.state is TaskState.Running
                assert table.runs(task_id, task.attempt, task.executor_id or "") == running
                assert not table.runs(task_id, task.attempt + 1, task.executor_id or "")


def life(seed: int) -> tuple[Model, TaskTable]:
    """A random life of one session's tasks: creations (None inputs too), dispatches to a few
    executors, finishes with and without outputs and messages, retries, expiry and cuts."""
    rng = random.Random(seed)
    model, table = Model(), TaskTable()
    time = 1_000
    for _ in range(300):
        time += rng.randint(0, 3)
        step = rng.random()
        ids = [i for i, t in model.tasks.items() if t.id and i > model.base]
        pending = [i for i in ids if model.tasks[i].state is TaskState.Pending]
        running = [i for i in ids if model.tasks[i].state is TaskState.Running]
        finished = [i for i in ids if model.tasks[i].state.is_terminal]
        if step < 0.25 or not ids:
            inputs: list[bytes | None] = [
                None if rng.random() < 0.1 else rng.randbytes(rng.randint(0, 20)) for _ in range(rng.randint(1, 8))
            ]
            first = table.count + 1
            table.create(first, inputs, time)
            for offset, data in enumerate(inputs):
                model.tasks[first + offset] = TaskEntry(first + offset, TaskState.Pending, data, time)
        elif step < 0.45 and pending:
            chosen = rng.sample(pending, rng.randint(1, min(3, len(pending))))
            executor = rng.choice(["e1", "e2", "e3"])
            if len(chosen) == 1 and rng.random() < 0.5:
                attempts = [table.dispatch(chosen[0], time, executor)]
            else:
                attempts = table.dispatch_many(chosen, time, executor)
            for task_id, attempt in zip(chosen, attempts, strict=True):
                task = model.tasks[task_id]
                task.state, task.attempt, task.start_time, task.executor_id = TaskState.Running, attempt, time, executor
                assert table.executor_of(task_id) == executor
        elif step < 0.65 and running:
            finishes = []
            for task_id in rng.sample(running, rng.randint(1, min(3, len(running)))):
                state = rng.choice([TaskState.Succeed, TaskState.Failed])
                output = None if rng.random() < 0.2 else rng.randbytes(rng.randint(0, 30))
                finishes.append(TaskFinish(task_id, state, output, "boom" if state is TaskState.Failed else None))
            executors = [model.tasks[f.task_id].executor_id for f in finishes]
            if len(finishes) == 1 and rng.random() < 0.5:
                f = finishes[0]
                table.finish(f.task_id, f.state, f.output, f.message, time)
            else:
                released, ok = table.finish_many(finishes, time)
                assert released == executors
                assert ok == sum(f.state is TaskState.Succeed for f in finishes)
            for f in finishes:
                task = model.tasks[f.task_id]
                task.state, task.output, task.message, task.completion_time = f.state, f.output, f.message, time
        elif step < 0.5 and pending:
            chosen = rng.sample(pending, rng.randint(1, min(3, len(pending))))
            trigger, message = rng.choice([(TaskTrigger.cancel, None), (TaskTrigger.bind_failed, "cannot start")])
            state = table.end_many(chosen, trigger, message, time)
            for task_id in chosen:
                task = model.tasks[task_id]
                task.state, task.output, task.message, task.completion_time = state, None, message, time
        elif step < 0.72 and running:
            task_id = rng.choice(running)
            event = Event(code=0, message="retried", creation_time=time) if rng.random() < 0.5 else None
            table.requeue(task_id, event)
            task = model.tasks[task_id]
            task.state = TaskState.Pending
            if event is not None:
                task.retry_count += 1
                task.events = [*(task.events or []), event]
        elif step < 0.9 and finished:
            for task_id in rng.sample(finished, rng.randint(1, len(finished))):
                assert table.expire(task_id)
                model.tasks[task_id] = TaskEntry(0)
            while model.base < len(model.tasks) and model.tasks[model.base + 1].id == 0:
                model.base += 1
            table.cut(model.base)
        model.check(table)
    return model, table


@pytest.mark.parametrize("seed", range(20))
def test_reads_equal_the_model(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read equals the model after every step, with output chunks of 40 bytes (a few
    outputs each); a chunk goes once nothing it holds is held. Would break: offsets wrong after
    a cut or in a later chunk, or a chunk freed while a task still reads from it."""
    monkeypatch.setattr(tasks_module, "OUTPUT_CHUNK", 40)
    model, table = life(seed)
    held = {i for i, t in model.tasks.items() if t.id and i > model.base and t.output}
    assert len(table._chunks) <= len(held) + 1  # chunks of expired outputs are gone


@pytest.mark.parametrize("seed", range(20))
def test_a_snapshot_of_the_columns_restores_them(seed: int) -> None:
    """to_snap -> bytes -> from_snap gives the same reads, and encodes alike again; a table
    rebuilt task by task from its reads (older snapshot formats) reads alike, and encodes alike
    when no task expired in the middle (an expired slot's creation time and input are not
    kept there). Would break: restart from a snapshot differing from the state it was taken of."""
    model, table = life(seed)
    encoded = msgspec.msgpack.encode(table.to_snap(model.base))
    restored = TaskTable.from_snap(_snap_codec.decode(encoded))
    model.check(restored)
    assert msgspec.msgpack.encode(restored.to_snap(model.base)) == encoded
    slots = [model.tasks[i] if model.tasks[i].id else TaskEntry(0) for i in range(model.base + 1, table.count + 1)]
    rebuilt = TaskTable.from_entries(slots, model.base)
    model.check(rebuilt)
    if all(t.id for t in slots):
        assert msgspec.msgpack.encode(rebuilt.to_snap(model.base)) == encoded


def test_only_finished_tasks_expire() -> None:
    """Expiring a Pending task is a bug in the record, and says so."""
    table = TaskTable()
    table.create(1, [b"a"], 5)
    with pytest.raises(ValueError, match="only finished tasks expire"):
        table.expire(1)


def test_a_batch_naming_a_task_in_the_wrong_state_is_refused_by_the_machine() -> None:
    """Finishing a Pending task, dispatching a Running one or an expired one: the task machine's
    own error (a bug in the record, never applied silently)."""
    table = TaskTable()
    table.create(1, [b"a", b"b"], 5)
    with pytest.raises(InvalidTransition):
        table.finish_many([TaskFinish(1, TaskState.Succeed, b"x")], 6)
    table.dispatch_many([1], 6, "e1")
    with pytest.raises(InvalidTransition):
        table.dispatch_many([1], 7, "e1")
    table.finish_many([TaskFinish(1, TaskState.Succeed, b"x")], 8)
    table.expire(1)
    table.cut(1)
    with pytest.raises(ValueError, match="expired"):
        table.dispatch_many([1], 9, "e1")
