"""Request batching: how one turn of the I/O thread's queue becomes few `CreateTasks` requests.

Rules:
- every `CreateTasks` for one session taken in the same turn goes out as ONE request (split
  only past `MAX_BATCH_TASKS` tasks or `MAX_BATCH_BYTES` of input); consecutive `Session.run`
  calls fold into one part whose sinks are their futures, with no per-task object;
- a batch with tasks that want their results asks for them in the same request
  (`CreateTasks{watch}`), so results flow without a second round trip;
- the returned ids are split back to the callers in order (`hand_out_ids`);
- flow control: each `CreateTasks{watch}` is one open watch on the session manager, which
  refuses a client more than `limits.max_watches_per_client` of them (`Welcome` says how many,
  1,000 by default). So creates are not sent straight from a turn: they join their session's
  queue of held creates, and `release` sends from the queues only the batches that fit in the
  room left (a batch without a watch needs none); the rest waits, in order, for watches to
  finish, and what waited long goes out merged into few big batches. A session's tasks are
  created in the order they were asked for (a batch never overtakes a held one).

Everything here is pure: no socket, no clock, no lock. The I/O thread sends what it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from flamed.client.commands import STOP, Call, CloseStream, Create, OpenStream, ResendStream, StreamCommand, Watch
from flamed.client.futures import TaskFuture
from flamed.client.sinks import WatchSinks, set_result
from protocol import frontend as fe

#: Open watches per client a session manager allows when its `Welcome` does not say.
DEFAULT_MAX_WATCHES = 1_000

#: Largest CreateTasks batch, by count and by input bytes (the server's frame limit is 64 MiB).
MAX_BATCH_TASKS = 50_000
MAX_BATCH_BYTES = 16 * 1024 * 1024


class Turn:
    """The commands one wake-up of the I/O thread took, sorted for sending."""

    __slots__ = ("creates", "others", "stop")

    def __init__(self) -> None:
        self.others: list[Call | Watch | StreamCommand] = []  # sent first, in queue order
        self.creates: dict[str, list[Create]] = {}  # then per session, in order of first sight
        self.stop = False


def take_turn(commands: Iterable[object]) -> Turn:
    """Sort `commands` (in queue order) into a `Turn`, folding runs into creates."""
    turn = Turn()
    creates = turn.creates
    for command in commands:
        if type(command) is TaskFuture:  # a run (commands.py)
            session_id: str = command.session_id  # type: ignore[assignment]  # a run's future has one
            parts = creates.setdefault(session_id, [])
            if not parts or parts[-1].future is not None:
                parts.append(Create(session_id, [], None, []))
            run = parts[-1]
            run.inputs.append(command.run_input)
            command.run_input = None  # the part holds it now
            run.sinks.append(command)  # type: ignore[union-attr]
        elif command is STOP:
            turn.stop = True
        elif isinstance(command, Create):
            creates.setdefault(command.session_id, []).append(command)
        elif isinstance(command, (Call, Watch, OpenStream, ResendStream, CloseStream)):
            turn.others.append(command)
    return turn


def batches(parts: list[Create]) -> Iterator[list[Create]]:
    """Group one session's parts into requests within the batch limits (a part is never split)."""
    batch: list[Create] = []
    count = size = 0
    for part in parts:
        part_size = sum(len(i) for i in part.inputs if i)
        if batch and (count + len(part.inputs) > MAX_BATCH_TASKS or size + part_size > MAX_BATCH_BYTES):
            yield batch
            batch, count, size = [], 0, 0
        batch.append(part)
        count += len(part.inputs)
        size += part_size
    if batch:
        yield batch


def hold(held: dict[str, list[Create]], creates: dict[str, list[Create]]) -> None:
    """Queue a turn's `creates` behind the ones `held` already, per session in order."""
    for session_id, parts in creates.items():
        queued = held.get(session_id)
        if queued is None:
            held[session_id] = parts
        else:
            queued.extend(parts)


def release(held: dict[str, list[Create]], room: int) -> Iterator[tuple[str, list[Create]]]:
    """Take from `held` the batches to send now, as (session id, batch), with at most `room`
    that watch; a session stops at its first batch that does not fit (its order is kept), and
    what is left stays in `held` (a session with nothing left leaves it). Lazy: consume it
    whole."""
    for session_id in list(held):
        parts = held[session_id]
        if room <= 0 and parts[0].sinks is not None:
            continue  # its first batch watches: not even worth measuring
        taken = 0
        for batch in batches(parts):
            if any(part.sinks is not None for part in batch):
                if room <= 0:
                    break
                room -= 1
            taken += len(batch)
            yield session_id, batch
        if taken == len(parts):
            del held[session_id]
        elif taken:
            del parts[:taken]


def create_request(session_id: str, parts: list[Create], key: str) -> fe.CreateTasks:
    """The one `CreateTasks` for a batch; it watches when any part wants results, and carries
    `key` so that it can be sent again after a reconnect without creating the tasks twice."""
    inputs = parts[0].inputs if len(parts) == 1 else [i for p in parts for i in p.inputs]
    watch = any(part.sinks is not None for part in parts)  # results come under this request id
    return fe.CreateTasks(session_id=session_id, inputs=inputs, watch=watch, key=key)


def hand_out_ids(parts: list[Create], task_ids: list[int]) -> WatchSinks:
    """Complete each part's future with its slice of `task_ids`; return the sinks to follow
    (each task's sink alone, not in a list: see `sinks.TaskSinks`)."""
    start = 0
    sinks: WatchSinks = {}
    for part in parts:
        ids = task_ids[start : start + len(part.inputs)]
        start += len(part.inputs)
        if part.sinks is not None:
            sinks.update(zip(ids, part.sinks, strict=True))
            for task_id, sink in zip(ids, part.sinks, strict=True):
                if type(sink) is TaskFuture:
                    sink.task_id = task_id
        if part.future is not None:
            set_result(part.future, ids)
    return sinks
