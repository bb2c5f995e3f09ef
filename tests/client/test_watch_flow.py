"""Flow control of the SDK's I/O thread under the session manager's watch limit, as a pure
test: `batching.hold`/`release` and `InFlight.watch_load`/`held`, driven by a fake session
manager that answers and finishes tasks.

What would break: every `CreateTasks{watch}` is one open watch on the session manager, which
refuses a client more than `limits.max_watches_per_client`; a client that sends a batch per
turn of its queue (a million `Session.run` calls) saw some of its own futures fail with
`LimitExceeded`. Held creates must go out in order, merged, once watches finish, and fail
with everything else when the connection does.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from flamed.client.batching import MAX_BATCH_TASKS, create_request, hold, release, take_turn
from flamed.client.commands import Create
from flamed.client.errors import FlameError, FlameErrorCode
from flamed.client.futures import TaskFuture
from flamed.client.inflight import ActiveWatch, InFlight, PendingCall, PendingCreate
from flamed.client.streams import Stream
from protocol import frontend as fe
from protocol.errors import ErrorCode
from protocol.types import Task, TaskState

pytestmark = pytest.mark.timeout(30)


def runs(session_id: str, *inputs: bytes) -> dict[str, list[Create]]:
    """One turn of `Session.run` calls (folded into one part, as the I/O thread folds them)."""
    return take_turn(TaskFuture(session_id, data) for data in inputs).creates


def plain(session_id: str, *inputs: bytes) -> Create:
    """A create that watches nothing (`create_tasks` without sinks)."""
    return Create(session_id, list(inputs), Future(), None)


def inputs_of(sent: list[tuple[str, list[Create]]]) -> list[tuple[str, list[bytes | None]]]:
    return [(s, [i for part in batch for i in part.inputs]) for s, batch in sent]


def test_release_sends_what_fits_in_order_and_keeps_the_rest_held() -> None:
    """With room for one watch, session s1's first turn goes and its second waits; s2's plain
    create needs no room and goes; s3's runs wait; a later plain create of s1 waits behind its
    held runs (no batch overtakes a held one); sessions with nothing left leave `held`."""
    held: dict[str, list[Create]] = {}
    hold(held, runs("s1", b"a", b"b"))
    hold(held, {"s2": [plain("s2", b"p")]})
    hold(held, runs("s3", b"x"))
    first = list(release(held, 1))
    assert inputs_of(first) == [("s1", [b"a", b"b"]), ("s2", [b"p"])]
    assert list(held) == ["s3"]

    hold(held, runs("s1", b"c"))
    hold(held, {"s1": [plain("s1", b"q")]})
    assert list(release(held, 0)) == []
    assert [len(parts) for parts in held.values()] == [1, 2]  # s3: 1 part; s1: its run, then q

    second = list(release(held, 5))
    assert inputs_of(second) == [("s3", [b"x"]), ("s1", [b"c", b"q"])]  # s1 merged into one batch
    assert held == {}


def test_creates_held_over_many_turns_go_out_merged_in_few_batches() -> None:
    """Held runs of many turns leave as one `CreateTasks{watch}` per `MAX_BATCH_TASKS` tasks,
    with every input in the order asked for, not one request (and one watch) per turn."""
    held: dict[str, list[Create]] = {}
    for turn in range(300):
        hold(held, runs("s1", *[b"%d.%d" % (turn, i) for i in range(5)]))
    assert list(release(held, 0)) == []
    sent = list(release(held, 10))
    assert len(sent) == 1
    assert held == {}
    request = create_request("s1", sent[0][1], "k1")
    assert request.watch
    assert request.inputs == [b"%d.%d" % (turn, i) for turn in range(300) for i in range(5)]

    for _ in range(3):
        hold(held, runs("s1", *[b"x"] * (MAX_BATCH_TASKS // 2 + 1)))
    assert [len(batch) for _, batch in release(held, 10)] == [1, 1, 1]  # a part is never split


def test_watch_load_counts_watches_streams_and_watching_creates_in_flight() -> None:
    """Open watches, streams (a whole-session watch is one) and `CreateTasks{watch}` awaiting
    their reply take room; a plain `CreateTasks` and a call do not."""
    flight = InFlight("ipc:///nowhere")
    flight.watches[1] = ActiveWatch("s1", {7: [Future()]})
    stream = Stream(fe.WatchTasks(session_id="s1"), None)  # type: ignore[arg-type]  # never fed here
    flight.streams[2] = stream
    watching = runs("s1", b"a")["s1"]
    flight.add_create(3, PendingCreate("s1", watching, 1e9, create_request("s1", watching, "k3")))
    quiet = [plain("s1", b"b")]
    flight.add_create(4, PendingCreate("s1", quiet, 1e9, create_request("s1", quiet, "k4")))
    flight.pending[5] = PendingCall(Future(), 1e9, fe.Ping())
    assert flight.watch_load() == 3
    flight.dispatch(fe.Error(request_id=3, code=ErrorCode.NotFound, message="no session s1"))
    flight.fail_pending(4, FlameError(FlameErrorCode.INTERNAL, "no reply"))
    assert flight.watch_load() == 2  # an answered create takes no room (until its watch opens)
    flight.add_create(6, PendingCreate("s1", watching, 1e9, create_request("s1", watching, "k6")))
    flight.fail_all(FlameError(FlameErrorCode.INVALID_STATE, "closed"))
    assert flight.watch_load() == 1  # the stream stays (its owner decides)


def test_fail_all_fails_held_creates_too() -> None:
    """A closed or unreachable connection fails what was held back: the `create_tasks` future
    and every `run()` future, and nothing stays held."""
    flight = InFlight("ipc:///nowhere")
    turn = runs("s1", b"a", b"b")
    created = plain("s1", b"p")
    turn["s1"].append(created)
    hold(flight.held, turn)
    flight.fail_all(FlameError(FlameErrorCode.INVALID_STATE, "closed"))
    futures: list[Future[Any]] = [*turn["s1"][0].sinks, created.future]  # type: ignore[list-item, misc]  # run() sinks are futures
    assert all(isinstance(f.exception(timeout=0), FlameError) for f in futures)
    assert flight.held == {}


def test_a_fake_session_manager_never_sees_more_watches_than_its_limit() -> None:
    """Forty turns of runs against a limit of 3: the thread's loop (hold, release under
    `limit - watch_load`, the reply opens the watch, a terminal push closes it) never has more
    than 3 watches open, and every future gets its own output, tasks numbered in order."""
    limit, flight = 3, InFlight("ipc:///nowhere")
    futures: list[TaskFuture[Any]] = []
    next_task, request_id, most = 1, 0, 0
    session: dict[int, bytes | None] = {}  # the fake session manager's tasks: id -> input
    for turn in range(40):
        creates = runs("s1", *[b"%d.%d" % (turn, i) for i in range(4)])
        futures += creates["s1"][0].sinks  # type: ignore[arg-type]  # run() sinks are futures
        hold(flight.held, creates)
        for session_id, batch in release(flight.held, limit - flight.watch_load()):
            request_id += 1
            request = create_request(session_id, batch, f"k{request_id}")
            flight.add_create(request_id, PendingCreate(session_id, batch, 1e9, request))
        most = max(most, flight.watch_load())
        if turn % 3 == 0 and flight.pending:  # the fake answers the oldest batch now and then
            answered, record = next(iter(flight.pending.items()))
            ids = list(range(next_task, next_task + len(record.request.inputs)))  # type: ignore[union-attr]
            session.update(zip(ids, record.request.inputs, strict=True))  # type: ignore[union-attr]
            next_task += len(ids)
            opened = flight.dispatch(fe.TasksCreated(request_id=answered, session_id="s1", task_ids=ids))
            assert opened is not None
            flight.watches[answered] = ActiveWatch("s1", opened.sinks)
        if turn % 2 == 0 and flight.watches:  # ... and finishes the oldest watch's tasks
            watch_id, watch = next(iter(flight.watches.items()))
            done = [Task(id=i, session_id="s1", state=TaskState.Succeed, output=session[i]) for i in watch.sinks]
            flight.dispatch(fe.TaskUpdates(request_id=watch_id, tasks=done))
    while flight.held or flight.pending or flight.watches:  # then everything, in the same way
        for session_id, batch in release(flight.held, limit - flight.watch_load()):
            request_id += 1
            request = create_request(session_id, batch, f"k{request_id}")
            flight.add_create(request_id, PendingCreate(session_id, batch, 1e9, request))
        most = max(most, flight.watch_load())
        for answered, record in list(flight.pending.items()):
            ids = list(range(next_task, next_task + len(record.request.inputs)))  # type: ignore[union-attr]
            session.update(zip(ids, record.request.inputs, strict=True))  # type: ignore[union-attr]
            next_task += len(ids)
            opened = flight.dispatch(fe.TasksCreated(request_id=answered, session_id="s1", task_ids=ids))
            assert opened is not None
            flight.watches[answered] = ActiveWatch("s1", opened.sinks)
        for watch_id, watch in list(flight.watches.items()):
            done = [Task(id=i, session_id="s1", state=TaskState.Succeed, output=session[i]) for i in watch.sinks]
            flight.dispatch(fe.TaskUpdates(request_id=watch_id, tasks=done))
    assert most == limit
    assert [f.result(timeout=0) for f in futures] == [b"%d.%d" % (t, i) for t in range(40) for i in range(4)]
    assert [f.task_id for f in futures] == list(range(1, 161))
