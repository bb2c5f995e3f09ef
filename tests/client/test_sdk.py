"""The SDK against a fake session manager: pipelining, coalescing, futures, errors, timeouts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flamed.client import Connection, FlameError, FlameErrorCode, TaskState
from protocol import frontend as fe
from protocol.errors import ErrorCode
from protocol.types import SessionSpec, Task
from protocol.types import TaskState as WireTaskState
from tests.client.fake_sm import FakeSessionManager
from tests.support.waiting import wait_for


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeSessionManager]:
    server = FakeSessionManager(f"ipc://{tmp_path}/sm")
    yield server
    server.stop()


@pytest.fixture
def conn(fake: FakeSessionManager) -> Iterator[Connection]:
    connection = Connection(fake.endpoint, timeout=2.0)
    yield connection
    connection.close()


@pytest.mark.timeout(20)
def test_run_futures_complete_with_outputs(conn: Connection) -> None:
    """Breaks if replies are not matched to their callers or updates not dispatched per task."""
    session = conn.create_session("app")
    futures = [session.run(f"in-{i}".encode()) for i in range(500)]
    assert [f.result(10) for f in futures] == [f"in-{i}".encode()[::-1] for i in range(500)]
    assert sorted(f.task_id for f in futures) == list(range(1, 501))  # type: ignore[attr-defined]  # the SDK's futures carry task_id, which Future does not declare


@pytest.mark.timeout(20)
def test_create_tasks_are_coalesced(conn: Connection, fake: FakeSessionManager) -> None:
    """Breaks if every run() becomes its own CreateTasks request, or if the results are asked
    for with a second request (a WatchTasks round trip) instead of `CreateTasks{watch}`."""
    session = conn.create_session("app")
    futures = [session.run(b"x") for _ in range(2000)]
    for future in futures:
        future.result(10)
    creates = fake.of_type(fe.CreateTasks)
    assert sum(len(c.inputs) for c in creates) == 2000
    assert len(creates) < 200
    assert max(len(c.inputs) for c in creates) > 1
    assert all(c.watch for c in creates)
    assert not fake.of_type(fe.WatchTasks)


@pytest.mark.timeout(20)
def test_create_tasks_without_results_asks_for_no_watch(conn: Connection, fake: FakeSessionManager) -> None:
    """Breaks if `create_tasks` (ids only) makes the server push results nobody reads."""
    session = conn.create_session("app")
    session.create_tasks([b"a", b"b"])
    (create,) = fake.of_type(fe.CreateTasks)
    assert not create.watch


@pytest.mark.timeout(20)
def test_create_tasks_splits_ids_in_order(conn: Connection) -> None:
    """Breaks if the ids of a merged CreateTasks are handed back to the wrong callers."""
    session = conn.create_session("app")
    first = session.create_tasks([b"a", b"b"])
    second = session.create_task(b"c")
    assert [t.id for t in first] == [1, 2]
    assert second.id == 3
    assert second.state is TaskState.Pending
    assert second.input == b"c"


@pytest.mark.timeout(20)
def test_failed_task_raises_its_message(conn: Connection, fake: FakeSessionManager) -> None:
    """Breaks if a Failed task's future does not carry the failure reason, as flamepy does."""
    fake.failures[b"boom"] = "ValueError: boom"
    session = conn.create_session("app")
    ok, bad = session.run(b"fine"), session.run(b"boom")
    assert ok.result(10) == b"enif"
    with pytest.raises(FlameError) as caught:
        bad.result(10)
    assert caught.value.code is FlameErrorCode.INTERNAL
    assert caught.value.message == "ValueError: boom"
    with pytest.raises(FlameError):
        session.invoke(b"boom")


@pytest.mark.timeout(20)
def test_cancelled_task_raises_invalid_state(conn: Connection, fake: FakeSessionManager) -> None:
    """Breaks if a task cancelled by closing its session looks like a success or hangs."""

    def cancel(session_id: str, task_ids: list[int]) -> list[fe.Message]:
        tasks = [Task(id=i, session_id=session_id, state=WireTaskState.Cancelled) for i in task_ids]
        return [fe.TaskUpdates(tasks=tasks)]

    fake.results = cancel
    session = conn.create_session("app")
    with pytest.raises(FlameError) as caught:
        session.run(b"x").result(10)
    assert caught.value.code is FlameErrorCode.INVALID_STATE


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("server_code", "expected"),
    [
        (ErrorCode.NotFound, FlameErrorCode.NOT_FOUND),
        (ErrorCode.AlreadyExists, FlameErrorCode.ALREADY_EXISTS),
        (ErrorCode.InvalidArgument, FlameErrorCode.INVALID_ARGUMENT),
        (ErrorCode.InvalidState, FlameErrorCode.INVALID_STATE),
        (ErrorCode.StorageUnavailable, FlameErrorCode.INTERNAL),
    ],
)
def test_error_replies_map_to_flame_codes(
    conn: Connection, fake: FakeSessionManager, server_code: ErrorCode, expected: FlameErrorCode
) -> None:
    """Breaks if server errors lose their kind or their message on the way to the caller."""
    fake.handlers[fe.GetSession] = lambda r: [fe.Error(code=server_code, message="told you")]
    with pytest.raises(FlameError) as caught:
        conn.get_session("s")
    assert caught.value.code is expected
    assert caught.value.message == "told you"
    assert caught.value.server_code is server_code


@pytest.mark.timeout(20)
def test_watch_error_fails_the_futures(conn: Connection, fake: FakeSessionManager) -> None:
    """Breaks if an Error ending the watch of a CreateTasks leaves the run() futures hanging."""
    fake.results = lambda session_id, task_ids: [fe.Error(code=ErrorCode.NotFound, message="session gone")]
    session = conn.create_session("app")
    with pytest.raises(FlameError) as caught:
        session.run(b"x").result(10)
    assert caught.value.code is FlameErrorCode.NOT_FOUND


@pytest.mark.timeout(20)
def test_get_application_missing_is_none(conn: Connection, fake: FakeSessionManager) -> None:
    """Breaks if get_application raises for a missing application (flamepy returns None)."""
    fake.handlers[fe.GetApplication] = lambda r: [fe.Error(code=ErrorCode.NotFound, message="no such app")]
    assert conn.get_application("nope") is None


@pytest.mark.timeout(20)
def test_common_data_must_be_bytes(conn: Connection) -> None:
    """Breaks if a str common_data is silently sent (flamepy rejects it)."""
    with pytest.raises(FlameError) as caught:
        conn.create_session("app", "text")  # type: ignore[arg-type]  # a str on purpose: it must be refused
    assert caught.value.code is FlameErrorCode.INVALID_ARGUMENT


@pytest.mark.timeout(20)
def test_session_ids_default_to_app_and_suffix(conn: Connection) -> None:
    """Breaks if the default session id is not flamepy's `<app>-<6 alnum>`."""
    session = conn.create_session("app")
    prefix, _, suffix = session.id.partition("-")
    assert prefix == "app"
    assert len(suffix) == 6
    assert suffix.isalnum()


@pytest.mark.timeout(20)
def test_watch_task_yields_until_terminal(conn: Connection) -> None:
    """Breaks if watch_task does not end at the terminal state."""
    session = conn.create_session("app")
    task = session.create_task(b"abc")
    states = [t.state for t in session.watch_task(task.id)]
    assert states == [TaskState.Running, TaskState.Succeed]


@pytest.mark.timeout(20)
def test_watch_task_times_out(conn: Connection, fake: FakeSessionManager) -> None:
    """Breaks if watch_task blocks past its timeout when nothing changes."""
    fake.handlers[fe.WatchTasks] = lambda r: []
    session = conn.create_session("app")
    task = session.create_task(b"abc")
    with pytest.raises(TimeoutError):
        list(session.watch_task(task.id, timeout=0.2))


@pytest.mark.timeout(20)
def test_missing_server_is_a_clear_error(tmp_path: Path) -> None:
    """Breaks if connecting to nothing hangs or gives an unclear error."""
    started = time.monotonic()
    with pytest.raises(FlameError) as caught:
        Connection(f"ipc://{tmp_path}/nobody", timeout=0.3)
    assert time.monotonic() - started < 3
    assert caught.value.code is FlameErrorCode.INVALID_CONFIG
    assert "cannot reach session manager at ipc://" in caught.value.message
    assert "within 0.3s" in caught.value.message


@pytest.mark.timeout(20)
def test_unanswered_request_times_out_and_connection_survives(fake: FakeSessionManager) -> None:
    """Breaks if a lost reply hangs the caller or wedges the I/O thread."""
    fake.handlers[fe.GetSession] = lambda r: []
    with Connection(fake.endpoint, timeout=0.3) as conn:
        with pytest.raises(FlameError) as caught:
            conn.get_session("s")
        assert "no reply from session manager at" in caught.value.message
        assert conn.create_session("app").application == "app"


@pytest.mark.timeout(20)
def test_open_watches_send_pings_and_fail_when_silent(fake: FakeSessionManager) -> None:
    """Breaks if a client with open watches goes quiet (the server would drop its watches)
    or waits forever on a session manager that stopped answering."""
    fake.results = lambda session_id, task_ids: []
    fake.handlers[fe.Ping] = lambda r: []
    with Connection(fake.endpoint, timeout=0.6) as conn:
        future = conn.create_session("app").run(b"x")
        with pytest.raises(FlameError) as caught:
            future.result(10)
        assert "no reply from session manager" in caught.value.message
    assert fake.of_type(fe.Ping)


@pytest.mark.timeout(20)
def test_closed_connection_rejects_calls(fake: FakeSessionManager) -> None:
    """Breaks if calls on a closed connection hang instead of failing."""
    conn = Connection(fake.endpoint, timeout=1.0)
    conn.close()
    with pytest.raises(FlameError) as caught:
        conn.list_sessions()
    assert caught.value.code is FlameErrorCode.INVALID_STATE


class Restarting:
    """A fake session manager that `restart` replaces by a fresh one at the same endpoint, as a
    session-manager restart does (the client's socket reconnects by itself)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.first = FakeSessionManager(endpoint)
        self.second: FakeSessionManager | None = None

    def restart(self) -> FakeSessionManager:
        self.first.stop()
        self.second = FakeSessionManager(self.endpoint)
        return self.second

    def stop(self) -> None:
        self.first.stop()
        if self.second is not None:
            self.second.stop()


@pytest.fixture
def restarting(tmp_path: Path) -> Iterator[Restarting]:
    servers = Restarting(f"ipc://{tmp_path}/sm")
    yield servers
    servers.stop()


@pytest.mark.timeout(20)
def test_watches_are_renewed_after_reconnect(restarting: Restarting) -> None:
    """Breaks if a restarted session manager (which has no watches) leaves run() futures
    waiting forever: the client must send its open watches again when it reconnects."""
    first = restarting.first
    first.results = lambda session_id, task_ids: [
        fe.TaskUpdates(tasks=[Task(id=i, session_id=session_id, state=WireTaskState.Running) for i in task_ids])
    ]
    with Connection(restarting.endpoint, timeout=5.0) as conn:
        future = conn.create_session("app").run(b"abc")
        # TasksCreated came back: the watch is open
        wait_for("the task id", lambda: getattr(future, "task_id", None), 5, interval=0.01)
        second = restarting.restart()
        assert future.result(10) is None  # the new server knows no input: output None
        (watch,) = second.of_type(fe.WatchTasks)
        assert watch.request_id == first.of_type(fe.CreateTasks)[0].request_id
        assert watch.task_ids == [future.task_id]  # type: ignore[attr-defined]  # the SDK's futures carry task_id, which Future does not declare


@pytest.mark.timeout(20)
def test_a_batch_whose_reply_was_lost_is_sent_again_with_its_key(restarting: Restarting) -> None:
    """Breaks if a CreateTasks whose answer a dropped connection lost is given up (the caller
    waits for the timeout and may submit twice) instead of being sent again on the new
    connection, under the same request id and idempotency key."""
    first = restarting.first
    first.handlers[fe.CreateTasks] = lambda r: []  # received, never answered
    with Connection(restarting.endpoint, timeout=5.0) as conn:
        future = conn.create_session("app").run(b"abc")
        wait_for("the CreateTasks", lambda: first.of_type(fe.CreateTasks), 5, interval=0.01)
        second = restarting.restart()
        assert future.result(10) == b"cba"
        (sent,) = first.of_type(fe.CreateTasks)
        (again,) = second.of_type(fe.CreateTasks)
        assert sent.key
        assert (again.key, again.request_id) == (sent.key, sent.request_id)


@pytest.mark.timeout(20)
def test_reads_whose_reply_was_lost_are_sent_again_but_not_a_create(restarting: Restarting) -> None:
    """Breaks if a read in flight when the session manager restarts waits for the whole timeout
    (reads are harmless to repeat), or if a `CreateSession` is repeated (the second would be
    refused as "already exists" although the first may have worked)."""
    first = restarting.first
    first.handlers[fe.CloseSession] = lambda r: []  # received, never answered
    first.handlers[fe.CreateSession] = lambda r: []
    with Connection(restarting.endpoint, timeout=4.0) as conn:
        closing = conn.io.call(fe.CloseSession(session_id="s1"))
        creating = conn.io.call(fe.CreateSession(session_id="s2", spec=SessionSpec(application="app")))
        wait_for("both requests", lambda: len(first.received) >= 2, 5, interval=0.01)
        second = restarting.restart()
        assert closing.result(10).session.id == "s1"  # without a repeat: "no reply" after 4 s
        with pytest.raises(FlameError, match="no reply"):
            creating.result(10)
        (again,) = second.of_type(fe.CloseSession)
        assert again.request_id == first.of_type(fe.CloseSession)[0].request_id
        assert second.of_type(fe.CreateSession) == []


@pytest.mark.timeout(20)
def test_cancelling_a_future_does_not_break_the_connection(conn: Connection, fake: FakeSessionManager) -> None:
    """Breaks if a user's `future.cancel()` makes the I/O thread fail when the result arrives."""
    session = conn.create_session("app")
    cancelled = [f for f in (session.run(b"x") for _ in range(100)) if f.cancel()]
    assert cancelled  # cancelled before the I/O thread completed them
    assert session.run(b"abc").result(10) == b"cba"


@pytest.mark.timeout(20)
def test_a_repeated_tasks_created_leaves_the_open_watch_alone(conn: Connection, fake: FakeSessionManager) -> None:
    """After a reconnect the SDK sends an unanswered batch again; when the first answer did
    arrive too, the session manager answers both (same key, same request id). The second
    `TasksCreated` used to fail every future of the batch ("unexpected TasksCreated"), found by
    the chaos soak under session-manager freezes."""
    first_answer = fake.create_tasks

    def answered_twice(request: fe.CreateTasks) -> list[fe.Message]:
        replies = first_answer(request)
        created = [r for r in replies if isinstance(r, fe.TasksCreated)]
        results = [r for r in replies if not isinstance(r, fe.TasksCreated)]
        return [*created, *created, *results]

    fake.handlers[fe.CreateTasks] = answered_twice
    session = conn.create_session("app")
    futures = [session.run(f"in-{i}".encode()) for i in range(20)]
    assert [f.result(10) for f in futures] == [f"in-{i}".encode()[::-1] for i in range(20)]


@pytest.mark.timeout(20)
def test_a_final_push_ends_a_watch_whose_tasks_are_unfinished(conn: Connection, fake: FakeSessionManager) -> None:
    """The session manager says a watch is over (its session was deleted): the watcher fails
    with that reason at once instead of waiting for updates that will never come."""
    session = conn.create_session("app")

    def ended(request: fe.WatchTasks) -> list[fe.Message]:
        running = [Task(id=i, session_id=request.session_id, state=WireTaskState.Running) for i in request.task_ids]
        return [fe.TaskUpdates(tasks=running), fe.TaskUpdates(tasks=[], final=True, reason="session s was deleted")]

    fake.handlers[fe.WatchTasks] = ended
    watcher = session.watch_task(1)
    assert next(watcher).state is TaskState.RUNNING
    with pytest.raises(FlameError, match="session s was deleted"):
        next(watcher)
