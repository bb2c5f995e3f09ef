"""The tasks of one session, held column by column: about 50 bytes per task plus its input and
output bytes, instead of a Python object per task (267 bytes with a 16-byte input).

A session manager holds hundreds of thousands of tasks; per task, a Python object with a dozen
fields, its own `bytes` objects for input and output and boxed ints for its timestamps costs
five times the data. Here each field is a typed array (`array`, `bytearray`) indexed by task
number, inputs and outputs are bytes appended to one buffer per session (offsets in an array),
the creation time is kept once per `TasksCreated` batch, and what is rare (messages, retry
events) lives in dicts keyed by task id. A read builds a `TaskEntry` (`get`), a value for the
caller to read; every change goes through a method here, called by `ClusterState.apply` only.

Layout: task id N is at index N-1-`dropped` of every column (ids 1..`dropped` were cut off the
front after they expired; the columns are cut once a quarter of them is dead). Inputs are known
at creation, in id order: task i's input is `inputs[in_off[i] - in_origin : in_off[i+1] -
in_origin]` (`in_off` has one more entry than there are tasks; offsets are positions in
everything ever appended, `in_origin` is where the buffer now starts). Outputs come in finish
order and are appended to chunks of about `OUTPUT_CHUNK` bytes: `out_off[i]` is the chunk's
number << 32 | the position in it, `out_len[i]` the length; a chunk goes when the last output it
holds expired (retention expires the oldest first, so chunks go in order). `None` (input or
output) is a flag, not a length. Times are Unix ms, -1 for "not yet".
"""

from __future__ import annotations

import bisect
import itertools
from array import array
from collections.abc import Iterator, Sequence
from typing import Protocol

import msgspec

from flamed.core.machines import InvalidTransition
from flamed.core.machines.task import TASK, TaskTrigger
from protocol.types import Event, Task, TaskState

#: State codes (an index into `STATES`); `EXPIRED` marks a slot retention deleted.
STATES = list(TaskState)
STATE_CODE = {state: index for index, state in enumerate(STATES)}
EXPIRED = 255
TERMINAL_CODES = frozenset(STATE_CODE[s] for s in STATES if s.is_terminal)
_PENDING = STATE_CODE[TaskState.Pending]
_RUNNING = STATE_CODE[TaskState.Running]

_INPUT_NONE = 1
_OUTPUT_NONE = 2
#: Outputs are appended to chunks of about this size; a chunk goes when the last task whose
#: output it holds expired (no rewriting, no per-task loop on the daemon's loop).
OUTPUT_CHUNK = 1 << 20
_POS = 0xFFFFFFFF


class TaskEntry(msgspec.Struct, array_like=True, gc=False):
    """One task as a value: what reads see (`TaskTable.get`), and how format-2 snapshots
    stored tasks. Changing it changes nothing in the state. Evolution: new fields last, with
    defaults."""

    id: int
    state: TaskState = TaskState.Pending
    input: bytes | None = None
    creation_time: int = 0
    output: bytes | None = None
    start_time: int | None = None
    completion_time: int | None = None
    attempt: int = 0
    retry_count: int = 0
    executor_id: str | None = None
    message: str | None = None
    events: list[Event] | None = None  # only unusual events (retries); others are derived


#: What `TaskTable.slot` answers for a task that expired under retention (one shared value; in
#: format-2 snapshots a task with id 0).
EXPIRED_TASK = TaskEntry(0, TaskState.Succeed)


class TaskColumnsSnap(msgspec.Struct, array_like=True, kw_only=True):
    """Format 3 snapshot of a `TaskTable`: the columns as raw bytes (native byte order, as the
    arrays hold them: snapshots are read by the machine that wrote them), from the first task
    not cut off; offsets rebased to 0 and outputs in task order, so that two tables holding the
    same tasks encode alike."""

    dropped: int
    state: memoryview
    flags: memoryview
    start: memoryview
    done: memoryview
    attempt: memoryview
    retry: memoryview
    executor: memoryview
    executors: list[str | None]
    in_off: memoryview
    inputs: memoryview
    out_len: memoryview
    outputs: memoryview
    ctime_first: memoryview
    ctime_value: memoryview
    messages: dict[int, str]
    events: dict[int, list[Event]]


class Finish(Protocol):
    """What `TaskTable.finish_many` reads of a finish (`records.TaskFinish`)."""

    @property
    def task_id(self) -> int: ...
    @property
    def state(self) -> TaskState: ...
    @property
    def output(self) -> bytes | None: ...
    @property
    def message(self) -> str | None: ...


#: trigger -> (source, target) state codes: each task trigger has one source state
EDGE = {trigger: (STATE_CODE[source], STATE_CODE[target]) for source, trigger, target in TASK.edges()}
if len(EDGE) != len(TASK.table):
    raise AssertionError("a task trigger with more than one source state: batch transitions need one")


def _wrong(task_id: int, code: int, trigger: TaskTrigger) -> Exception:
    """The error for a record naming a task not in the state its trigger needs (a bug in the
    record): the machine's own `InvalidTransition`, or a ValueError for an expired task."""
    if code == EXPIRED:
        return ValueError(f"task {task_id} expired; a record names it")
    try:
        TASK.next(STATES[code], trigger)
    except InvalidTransition as exc:
        return exc
    return ValueError(f"task {task_id}: {STATES[code]} is not the source of {trigger}")


class TaskTable:
    """The tasks of one session (see the module rules)."""

    __slots__ = (
        "_attempt",
        "_chunk",
        "_chunk_live",
        "_chunks",
        "_ctime_first",
        "_ctime_value",
        "_done",
        "_dropped",
        "_events",
        "_exe",
        "_exe_index",
        "_executors",
        "_flags",
        "_in_off",
        "_in_origin",
        "_inputs",
        "_messages",
        "_out_len",
        "_out_off",
        "_retry",
        "_start",
        "_state",
    )

    def __init__(self) -> None:
        self._dropped = 0
        self._state = bytearray()
        self._flags = bytearray()
        self._start = array("q")
        self._done = array("q")
        self._attempt = array("I")
        self._retry = array("I")
        self._exe = array("I")
        self._executors: list[str | None] = [None]
        self._exe_index: dict[str | None, int] = {None: 0}
        self._in_off = array("Q", [0])
        self._inputs = bytearray()
        self._in_origin = 0
        self._out_off = array("Q")
        self._out_len = array("I")
        #: output chunks by number, how many held outputs each holds, the one appended to
        self._chunks: dict[int, bytearray] = {0: bytearray()}
        self._chunk_live: dict[int, int] = {0: 0}
        self._chunk = 0
        #: creation time per batch: the first task id of each batch and its time (ascending)
        self._ctime_first = array("q")
        self._ctime_value = array("q")
        self._messages: dict[int, str] = {}
        self._events: dict[int, list[Event]] = {}

    # ------------------------------------------------------------------ reading

    @property
    def count(self) -> int:
        """Tasks ever created (the highest task id)."""
        return self._dropped + len(self._state)

    @property
    def dropped(self) -> int:
        return self._dropped

    def code(self, task_id: int) -> int:
        """State code of task `task_id` (`EXPIRED` for one cut off the front); IndexError if
        it was never created."""
        index = task_id - 1 - self._dropped
        if index < 0:
            if task_id > 0:
                return EXPIRED
            raise IndexError(task_id)
        return self._state[index]

    def held(self, task_id: int) -> bool:
        """Task `task_id` was created and has not expired (`get` would answer it), without
        building it."""
        index = task_id - 1 - self._dropped
        return task_id > 0 and 0 <= index < len(self._state) and self._state[index] != EXPIRED

    def finished(self, task_id: int) -> bool:
        """Task `task_id` is held and terminal (Succeed, Failed or Cancelled), without building
        it: a watch of results asks this of every task that changed."""
        index = task_id - 1 - self._dropped
        return task_id > 0 and 0 <= index < len(self._state) and self._state[index] in TERMINAL_CODES

    def state(self, task_id: int) -> TaskState:
        return STATES[self.code(task_id)]

    def retry_count(self, task_id: int) -> int:
        return self._retry[task_id - 1 - self._dropped]

    def runs(self, task_id: int, attempt: int, executor_id: str) -> bool:
        """Task `task_id` is Running in `attempt` on `executor_id` (a completion's check,
        without building the task)."""
        index = task_id - 1 - self._dropped
        if task_id <= 0 or index < 0 or index >= len(self._state) or self._state[index] != _RUNNING:
            return False
        return self._attempt[index] == attempt and self._executors[self._exe[index]] == executor_id

    def attempt_and_input(self, task_id: int) -> tuple[int, bytes | None]:
        """What a launch sends of task `task_id` (which must be held)."""
        index = task_id - 1 - self._dropped
        if self._flags[index] & _INPUT_NONE:
            return self._attempt[index], None
        origin = self._in_origin
        return self._attempt[index], bytes(
            self._inputs[self._in_off[index] - origin : self._in_off[index + 1] - origin]
        )

    def get(self, task_id: int) -> TaskEntry | None:
        """Task `task_id` as a value, or None: never created, or expired."""
        index = task_id - 1 - self._dropped
        if task_id <= 0 or index < 0 or index >= len(self._state):
            return None
        code = self._state[index]
        if code == EXPIRED:
            return None
        return self._entry(task_id, index, code)

    def pushed(self, task_id: int, session_id: str, include_data: bool) -> Task | None:
        """The wire view of task `task_id` in a watch push (`views.task_view` without events),
        or None as `get`: built from the columns in one step, since a session manager pushes
        every task it finishes (a `TaskEntry` first, then the view, cost twice as much)."""
        index = task_id - 1 - self._dropped
        if task_id <= 0 or index < 0 or index >= len(self._state):
            return None
        code = self._state[index]
        if code == EXPIRED:
            return None
        task_input: bytes | None = None
        output: bytes | None = None
        if include_data:
            flags = self._flags[index]
            if not flags & _INPUT_NONE:
                origin = self._in_origin
                task_input = bytes(self._inputs[self._in_off[index] - origin : self._in_off[index + 1] - origin])
            if not flags & _OUTPUT_NONE:
                where, length = self._out_off[index], self._out_len[index]
                start = where & _POS
                output = bytes(self._chunks[where >> 32][start : start + length]) if length else b""
        done = self._done[index]
        return Task(
            id=task_id,
            session_id=session_id,
            state=STATES[code],
            input=task_input,
            output=output,
            creation_time=self._ctime_value[bisect.bisect_right(self._ctime_first, task_id) - 1],
            completion_time=done if done >= 0 else None,
            attempt=self._attempt[index],
            retry_count=self._retry[index],
            executor_id=self._executors[self._exe[index]] if code == _RUNNING else None,
            message=self._messages.get(task_id),
        )

    def slot(self, index: int) -> TaskEntry:
        """The task at position `index` of the table (`EXPIRED_TASK` if it expired)."""
        if index < 0:
            index += len(self._state)
        code = self._state[index]
        if code == EXPIRED:
            return EXPIRED_TASK
        return self._entry(index + 1 + self._dropped, index, code)

    def _entry(self, task_id: int, index: int, code: int) -> TaskEntry:
        flags = self._flags[index]
        task_input: bytes | None = None
        if not flags & _INPUT_NONE:
            origin = self._in_origin
            task_input = bytes(self._inputs[self._in_off[index] - origin : self._in_off[index + 1] - origin])
        output: bytes | None = None
        done = self._done[index]
        if not flags & _OUTPUT_NONE:
            where = self._out_off[index]
            start = where & _POS
            output = (
                bytes(self._chunks[where >> 32][start : start + self._out_len[index]]) if self._out_len[index] else b""
            )
        started = self._start[index]
        events = self._events.get(task_id)
        return TaskEntry(
            task_id,
            STATES[code],
            task_input,
            self._ctime_value[bisect.bisect_right(self._ctime_first, task_id) - 1],
            output,
            started if started >= 0 else None,
            done if done >= 0 else None,
            self._attempt[index],
            self._retry[index],
            self._executors[self._exe[index]],
            self._messages.get(task_id),
            list(events) if events is not None else None,
        )

    def __len__(self) -> int:
        """Slots held (tasks not cut off the front, expired ones in the middle included)."""
        return len(self._state)

    def __getitem__(self, index: int) -> TaskEntry:
        return self.slot(index)

    def __iter__(self) -> Iterator[TaskEntry]:
        for index in range(len(self._state)):
            yield self.slot(index)

    def codes(self) -> bytearray:
        """The state codes, slot by slot (read only: for scans such as retention's)."""
        return self._state

    # ------------------------------------------------------------------ changes (apply only)

    def create(self, first_id: int, inputs: Sequence[bytes | None], time: int) -> None:
        """Tasks `first_id`.. (Pending) with these inputs, created at `time`."""
        if first_id != self.count + 1:
            raise ValueError(f"task ids out of order: {first_id} after {self.count}")
        n = len(inputs)
        self._ctime_first.append(first_id)
        self._ctime_value.append(time)
        self._state.extend(bytes(n))  # Pending is code 0
        self._start.frombytes(b"\xff" * (8 * n))  # -1: not started
        self._done.frombytes(b"\xff" * (8 * n))
        self._attempt.frombytes(bytes(4 * n))
        self._retry.frombytes(bytes(4 * n))
        self._exe.frombytes(bytes(4 * n))
        self._out_off.frombytes(bytes(8 * n))
        self._out_len.frombytes(bytes(4 * n))
        if any(i is None for i in inputs):
            self._flags.extend(_OUTPUT_NONE | (_INPUT_NONE if i is None else 0) for i in inputs)
            data = [i for i in inputs if i is not None]
        else:
            self._flags.extend(bytes([_OUTPUT_NONE]) * n)  # no output until finished
            data = inputs  # type: ignore[assignment]  # no None in it
        lengths = map(len, data) if len(data) == n else (0 if i is None else len(i) for i in inputs)
        ends = itertools.accumulate(lengths, initial=self._in_off[-1])
        next(ends)  # the end of the previous task, already there
        self._in_off.extend(ends)
        self._inputs += b"".join(data)

    def dispatch_many(self, task_ids: Sequence[int], time: int, executor_id: str) -> list[int]:
        """Pending -> Running on `executor_id`: their new attempts. Raises at the first task
        not Pending (`_wrong`)."""
        source, target = EDGE[TaskTrigger.dispatch]
        state, attempt, start, exe = self._state, self._attempt, self._start, self._exe
        dropped = self._dropped
        index_of = self._exe_index.get(executor_id)
        if index_of is None:
            index_of = self._exe_index[executor_id] = len(self._executors)
            self._executors.append(executor_id)
        attempts = []
        for task_id in task_ids:
            index = task_id - 1 - dropped
            if index < 0 or state[index] != source:
                raise _wrong(task_id, state[index] if index >= 0 else EXPIRED, TaskTrigger.dispatch)
            state[index] = target
            now = attempt[index] + 1
            attempt[index] = now
            start[index] = time
            exe[index] = index_of
            attempts.append(now)
        return attempts

    def finish_many(self, finishes: Sequence[Finish], time: int) -> tuple[list[str | None], int]:
        """Running -> Succeed (a finish saying Succeed) or Failed, with their outputs and
        messages, at `time`: (the executor each was on, how many succeeded). Raises at the
        first task not Running (`_wrong`)."""
        source, succeeded = EDGE[TaskTrigger.succeed]
        failed = EDGE[TaskTrigger.fail][1]
        state, flags, done, out_off, out_len = self._state, self._flags, self._done, self._out_off, self._out_len
        messages, names, exe = self._messages, self._executors, self._exe
        chunks, live, chunk_id = self._chunks, self._chunk_live, self._chunk
        chunk = chunks[chunk_id]
        dropped = self._dropped
        released: list[str | None] = []
        ok = 0
        for finish in finishes:
            task_id = finish.task_id
            index = task_id - 1 - dropped
            if index < 0 or state[index] != source:
                trigger = TaskTrigger.succeed if finish.state is TaskState.Succeed else TaskTrigger.fail
                raise _wrong(task_id, state[index] if index >= 0 else EXPIRED, trigger)
            if finish.state is TaskState.Succeed:
                state[index] = succeeded
                ok += 1
            else:
                state[index] = failed
            done[index] = time
            output = finish.output
            if output is None:
                flags[index] |= _OUTPUT_NONE
                out_len[index] = 0
            else:
                flags[index] &= ~_OUTPUT_NONE
                size = len(output)
                out_len[index] = size
                if size:
                    if chunk and len(chunk) + size > OUTPUT_CHUNK:
                        if not live[chunk_id]:  # all its outputs expired while it was current
                            del chunks[chunk_id], live[chunk_id]
                        chunk_id += 1
                        chunk = chunks[chunk_id] = bytearray()
                        live[chunk_id] = 0
                    out_off[index] = (chunk_id << 32) | len(chunk)
                    chunk += output
                    live[chunk_id] += 1
            if finish.message is not None:
                messages[task_id] = finish.message
            elif messages:
                messages.pop(task_id, None)
            released.append(names[exe[index]])
        self._chunk = chunk_id
        return released, ok

    def end_many(self, task_ids: Sequence[int], trigger: TaskTrigger, message: str | None, time: int) -> TaskState:
        """Tasks -> the target of `trigger` (cancel, bind_failed: Pending -> finished with no
        output), with `message`, at `time`; returns that state. Raises at the first task not
        in the trigger's source state (`_wrong`)."""
        source, target = EDGE[trigger]
        state, flags, done, out_len, messages = self._state, self._flags, self._done, self._out_len, self._messages
        dropped = self._dropped
        for task_id in task_ids:
            index = task_id - 1 - dropped
            if index < 0 or state[index] != source:
                raise _wrong(task_id, state[index] if index >= 0 else EXPIRED, trigger)
            state[index] = target
            done[index] = time
            flags[index] |= _OUTPUT_NONE
            out_len[index] = 0
            if message is not None:
                messages[task_id] = message
            elif messages:
                messages.pop(task_id, None)
        return STATES[target]

    def dispatch(self, task_id: int, time: int, executor_id: str) -> int:
        """Pending -> Running on `executor_id`; returns the new attempt."""
        index = task_id - 1 - self._dropped
        self._state[index] = _RUNNING
        attempt = self._attempt[index] + 1
        self._attempt[index] = attempt
        self._start[index] = time
        exe = self._exe_index.get(executor_id)
        if exe is None:
            exe = self._exe_index[executor_id] = len(self._executors)
            self._executors.append(executor_id)
        self._exe[index] = exe
        return attempt

    def executor_of(self, task_id: int) -> str | None:
        return self._executors[self._exe[task_id - 1 - self._dropped]]

    def finish(self, task_id: int, state: TaskState, output: bytes | None, message: str | None, time: int) -> None:
        """-> a finished state, with its output and message, at `time`."""
        index = task_id - 1 - self._dropped
        self._state[index] = STATE_CODE[state]
        self._done[index] = time
        if output is None:
            self._flags[index] |= _OUTPUT_NONE
            self._out_len[index] = 0
        else:
            self._flags[index] &= ~_OUTPUT_NONE
            self._out_len[index] = len(output)
            if output:
                self._out_off[index] = self._put(output)
        if message is None:
            self._messages.pop(task_id, None)
        else:
            self._messages[task_id] = message

    def set_state(self, task_id: int, state: TaskState) -> None:
        self._state[task_id - 1 - self._dropped] = STATE_CODE[state]

    def requeue(self, task_id: int, event: Event | None) -> None:
        """Running -> Pending; with `event`, a counted retry."""
        index = task_id - 1 - self._dropped
        self._state[index] = _PENDING
        if event is not None:
            self._retry[index] += 1
            self._events.setdefault(task_id, []).append(event)

    def expire(self, task_id: int) -> bool:
        """Delete a finished task's data; False if it was gone already."""
        index = task_id - 1 - self._dropped
        if index < 0 or self._state[index] == EXPIRED:
            return False
        if self._state[index] not in TERMINAL_CODES:
            raise ValueError(f"task {task_id} is {STATES[self._state[index]]}; only finished tasks expire")
        self._state[index] = EXPIRED
        if self._out_len[index]:
            self._drop_output(self._out_off[index] >> 32)
        self._out_len[index] = 0
        self._flags[index] |= _OUTPUT_NONE
        self._messages.pop(task_id, None)
        self._events.pop(task_id, None)
        return True

    def cut(self, base: int) -> None:
        """Tasks 1..`base` all expired: let their memory go. The columns are cut once a
        quarter of them is dead (so that cutting costs O(1) per task), inputs with them."""
        dead = base - self._dropped
        if dead <= 0 or dead * 4 < len(self._state):
            return
        in_end = self._in_off[dead]
        for column in (self._state, self._flags, self._start, self._done, self._attempt, self._retry, self._exe):
            del column[:dead]
        del self._out_off[:dead]
        del self._out_len[:dead]
        del self._in_off[:dead]
        del self._inputs[: in_end - self._in_origin]
        self._in_origin = in_end
        self._dropped = base
        keep = max(0, bisect.bisect_right(self._ctime_first, base + 1) - 1)
        if keep:
            del self._ctime_first[:keep]
            del self._ctime_value[:keep]

    def _put(self, output: bytes) -> int:
        """Append a (non-empty) output to the current chunk: where it is (chunk << 32 | position)."""
        chunk_id = self._chunk
        chunk = self._chunks[chunk_id]
        if chunk and len(chunk) + len(output) > OUTPUT_CHUNK:
            if not self._chunk_live[chunk_id]:  # all its outputs expired while it was current
                del self._chunks[chunk_id], self._chunk_live[chunk_id]
            chunk_id = self._chunk = chunk_id + 1
            chunk = self._chunks[chunk_id] = bytearray()
            self._chunk_live[chunk_id] = 0
        where = (chunk_id << 32) | len(chunk)
        chunk += output
        self._chunk_live[chunk_id] += 1
        return where

    def _drop_output(self, chunk_id: int) -> None:
        """An output in chunk `chunk_id` is not held any more: the chunk goes with its last."""
        live = self._chunk_live[chunk_id] - 1
        if live or chunk_id == self._chunk:
            self._chunk_live[chunk_id] = live
        else:
            del self._chunk_live[chunk_id]
            del self._chunks[chunk_id]

    # ------------------------------------------------------------------ snapshots

    def to_snap(self, base: int) -> TaskColumnsSnap:
        """The columns of tasks `base`+1.. as bytes, normalised (see `TaskColumnsSnap`): the
        same tasks encode alike however they came to be held (cuts, finish order, executors
        first seen)."""
        k = base - self._dropped
        in_off = self._in_off
        origin = in_off[k]
        inputs = bytes(self._inputs[origin - self._in_origin : in_off[-1] - self._in_origin])
        chunks, out_len = self._chunks, self._out_len
        outputs = b"".join(
            chunks[where >> 32][(where & _POS) : (where & _POS) + size]
            for where, size in zip(self._out_off[k:], out_len[k:], strict=True)
            if size
        )
        names: list[str | None] = [None]
        remap: dict[int, int] = {0: 0}
        executor = array("I")
        for index in self._exe[k:]:
            new = remap.get(index)
            if new is None:
                new = remap[index] = len(names)
                names.append(self._executors[index])
            executor.append(new)
        first, value = array("q"), array("q")
        keep = max(0, bisect.bisect_right(self._ctime_first, base + 1) - 1)
        for task_id, time in zip(self._ctime_first[keep:], self._ctime_value[keep:], strict=True):
            if not value or value[-1] != time:
                first.append(max(task_id, base + 1))
                value.append(time)
        return TaskColumnsSnap(
            dropped=base,
            state=memoryview(bytes(self._state[k:])),
            flags=memoryview(bytes(self._flags[k:])),
            start=memoryview(self._start[k:].tobytes()),
            done=memoryview(self._done[k:].tobytes()),
            attempt=memoryview(self._attempt[k:].tobytes()),
            retry=memoryview(self._retry[k:].tobytes()),
            executor=memoryview(executor.tobytes()),
            executors=names,
            in_off=memoryview(array("Q", [o - origin for o in in_off[k:]]).tobytes()),
            inputs=memoryview(inputs),
            out_len=memoryview(out_len[k:].tobytes()),
            outputs=memoryview(outputs),
            ctime_first=memoryview(first.tobytes()),
            ctime_value=memoryview(value.tobytes()),
            messages={i: m for i, m in sorted(self._messages.items()) if i > base},
            events={i: list(e) for i, e in sorted(self._events.items()) if i > base},
        )

    @classmethod
    def from_snap(cls, snap: TaskColumnsSnap) -> TaskTable:
        """The table a snapshot holds (its bytes are copied: `snap` may view the payload)."""
        table = cls()
        table._dropped = snap.dropped
        table._state = bytearray(snap.state)
        table._flags = bytearray(snap.flags)
        table._in_off = array("Q")
        for column, data in (
            (table._start, snap.start),
            (table._done, snap.done),
            (table._attempt, snap.attempt),
            (table._retry, snap.retry),
            (table._exe, snap.executor),
            (table._in_off, snap.in_off),
            (table._out_len, snap.out_len),
            (table._ctime_first, snap.ctime_first),
            (table._ctime_value, snap.ctime_value),
        ):
            column.frombytes(data)
        table._inputs = bytearray(snap.inputs)
        table._executors = list(snap.executors)
        table._exe_index = {e: i for i, e in enumerate(table._executors)}
        table._chunks = {0: bytearray(snap.outputs)}
        table._chunk_live = {0: sum(map(bool, table._out_len))}
        table._out_off = array("Q", itertools.accumulate(table._out_len, initial=0))
        table._out_off.pop()
        table._messages = dict(snap.messages)
        table._events = {k: list(v) for k, v in snap.events.items()}
        n = len(table._state)
        lengths = {len(c) for c in (table._flags, table._start, table._done, table._attempt, table._retry, table._exe)}
        if lengths != {n} or len(table._in_off) != n + 1 or len(table._out_len) != n:
            raise ValueError("task columns of different lengths")
        return table

    @classmethod
    def from_entries(cls, entries: Sequence[TaskEntry], dropped: int) -> TaskTable:
        """From a list of tasks (format 1 and 2 snapshots); `EXPIRED_TASK` or id 0: expired."""
        table = cls()
        table._dropped = dropped
        for index, task in enumerate(entries):
            task_id = dropped + index + 1
            table.create(task_id, [task.input], task.creation_time)
            if task is EXPIRED_TASK or task.id == 0:
                table._state[index] = EXPIRED
                table._flags[index] |= _OUTPUT_NONE
                continue
            table._attempt[index] = task.attempt
            table._retry[index] = task.retry_count
            if task.start_time is not None:
                table._start[index] = task.start_time
            if task.executor_id is not None:
                table.dispatch(task_id, task.start_time if task.start_time is not None else -1, task.executor_id)
                table._attempt[index] = task.attempt
            if task.completion_time is not None or task.state.is_terminal:
                done = task.completion_time if task.completion_time is not None else 0
                table.finish(task_id, task.state, task.output, task.message, done)
                if task.completion_time is None:
                    table._done[index] = -1
            elif task.message is not None:
                table._messages[task_id] = task.message
            table._state[index] = STATE_CODE[task.state]
            if task.events:
                table._events[task_id] = list(task.events)
        table._merge_batches()
        return table

    def _merge_batches(self) -> None:
        """One creation-time batch per run of equal times (after building task by task)."""
        first, value = array("q"), array("q")
        for task_id, time in zip(self._ctime_first, self._ctime_value, strict=True):
            if not value or value[-1] != time:
                first.append(task_id)
                value.append(time)
        self._ctime_first, self._ctime_value = first, value
