"""The SDK with paged task lists and bounded watch requests, against a fake session manager.

What would break: `Session.list_tasks` fetching a whole session at once (or only its first
page), or a client whose watch is bigger than `limits.max_watch_task_ids` having it refused
after a reconnect (its futures would never complete)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flamed.client import Connection
from flamed.client.inflight import MAX_WATCH_IDS
from protocol import frontend as fe
from protocol.types import Task, TaskState
from tests.client.fake_sm import FakeSessionManager
from tests.client.test_sdk import Restarting
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeSessionManager]:
    server = FakeSessionManager(f"ipc://{tmp_path}/sm")
    yield server
    server.stop()


@pytest.fixture
def restarting(tmp_path: Path) -> Iterator[Restarting]:
    servers = Restarting(f"ipc://{tmp_path}/sm")
    yield servers
    servers.stop()


def paged(total: int, size: int, cursors: bool = True) -> object:
    def list_tasks(request: fe.ListTasks) -> list[fe.Message]:
        start = max(1, request.cursor) if cursors else 1
        ids = range(start, min(total, start + size - 1) + 1) if cursors else range(1, total + 1)
        tasks = [Task(id=i, session_id=request.session_id, state=TaskState.Succeed) for i in ids]
        after = start + len(tasks)
        return [fe.TasksReply(tasks=tasks, next_cursor=after if cursors and after <= total else 0)]

    return list_tasks


def test_list_tasks_fetches_pages_lazily_in_order(fake: FakeSessionManager) -> None:
    """The first page at once (an unknown session raises at the call), the next ones only as
    the iterator reaches them, each from the cursor the previous reply gave."""
    fake.handlers[fe.ListTasks] = paged(10, 3)  # type: ignore[assignment]  # paged() builds a handler typed for ListTasks only
    with Connection(fake.endpoint, timeout=5.0) as conn:
        session = conn.create_session("app")
        tasks = session.list_tasks()
        assert len(fake.of_type(fe.ListTasks)) == 1
        first = [next(tasks).id for _ in range(4)]
        assert len(fake.of_type(fe.ListTasks)) == 2
        rest = [t.id for t in tasks]
    assert first + rest == list(range(1, 11))
    assert [r.cursor for r in fake.of_type(fe.ListTasks)] == [0, 4, 7, 10]


def test_list_tasks_from_a_server_without_pages_is_one_page(fake: FakeSessionManager) -> None:
    """An older session manager sends no `next_cursor`: its one reply is the whole list."""
    fake.handlers[fe.ListTasks] = paged(5, 0, cursors=False)  # type: ignore[assignment]  # paged() builds a handler typed for ListTasks only
    with Connection(fake.endpoint, timeout=5.0) as conn:
        assert [t.id for t in conn.create_session("app").list_tasks()] == [1, 2, 3, 4, 5]
    assert len(fake.of_type(fe.ListTasks)) == 1


def test_a_big_watch_is_renewed_in_requests_of_at_most_max_watch_ids(restarting: Restarting) -> None:
    """After a reconnect the client renews its watches; one over the server's per-request
    limit goes out as several `WatchTasks` (the first under the original request id, which
    replaces the watch the server may still hold), together covering every task once."""
    first = restarting.first
    first.results = lambda session_id, task_ids: []  # created, never finished
    count = MAX_WATCH_IDS * 2 + 5
    with Connection(restarting.endpoint, timeout=10.0) as conn:
        futures = conn.create_session("app").run_many([b"x"] * count)
        wait_for("the task ids", lambda: getattr(futures[-1], "task_id", None), 10, interval=0.01)
        second = restarting.restart()
        for future in futures:
            assert future.result(20) is None  # the new server knows no input: output None
    (create,) = first.of_type(fe.CreateTasks)
    watches = second.of_type(fe.WatchTasks)
    assert [len(w.task_ids) for w in watches] == [MAX_WATCH_IDS, MAX_WATCH_IDS, 5]
    assert watches[0].request_id == create.request_id
    assert sorted(i for w in watches for i in w.task_ids) == list(range(1, count + 1))
