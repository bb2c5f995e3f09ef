"""A watch that ends says so (`TaskUpdates.final`), so a client can tell it from a lost
connection. Before, a whole-session watch ended with its session without a word.

Through the pure controller; nothing here opens a socket.
"""

from __future__ import annotations

import pytest

from flamed.core.clients import Flow
from protocol import frontend as fe
from protocol.types import ApplicationSpec, TaskState
from tests.unit.core_harness import Harness

pytestmark = pytest.mark.timeout(30)


def cluster() -> Harness:
    h = Harness()
    h.request(fe.RegisterApplication(name="app", spec=ApplicationSpec(command="true")))
    return h


def watch(h: Harness, request: fe.WatchTasks, peer: bytes = b"watcher", request_id: int = 7) -> None:
    request.request_id = request_id
    h.ctl.handle_client(peer, request, h.now())
    h.pump()


def updates(h: Harness, peer: bytes = b"watcher", request_id: int = 7) -> list[fe.TaskUpdates]:
    return [m for m in h.replies.get(peer, []) if isinstance(m, fe.TaskUpdates) and m.request_id == request_id]


def test_a_whole_session_watch_ends_with_a_final_push_when_the_session_closes() -> None:
    """The cancellations come, then the end: exactly one push is final, and it is the last."""
    h = cluster()
    h.session("s1", application="app")
    h.tasks("s1", [b"a", b"b"])
    watch(h, fe.WatchTasks(session_id="s1"))
    h.request(fe.CloseSession(session_id="s1"))
    pushes = updates(h)
    assert [p.final for p in pushes].count(True) == 1, pushes
    assert pushes[-1].final, pushes
    assert {t.state for p in pushes for t in p.tasks} >= {TaskState.Cancelled}
    assert len(h.ctl.watches) == 0


def test_a_watch_on_ids_marks_its_last_page_final() -> None:
    """Its last terminal task comes on a page marked final; no empty push follows."""
    h = cluster()
    h.add_node("n1", 2)
    h.session("s1", application="app")
    ids = h.tasks("s1", [b"a"])
    watch(h, fe.WatchTasks(session_id="s1", task_ids=ids))
    h.advance(1.0)
    pushes = updates(h)
    assert pushes[-1].final, pushes
    assert pushes[-1].tasks, pushes
    assert pushes[-1].tasks[-1].state is TaskState.Succeed, pushes
    assert not any(p.final for p in pushes[:-1])


def test_a_deleted_session_ends_its_watches_with_the_reason() -> None:
    """A watch still holding news for a slow client when its session is deleted ends with an
    empty final push that names the deletion (the client must not wait for those tasks)."""
    h = cluster()
    h.session("s1", application="app")
    h.tasks("s1", [b"a"])
    watch(h, fe.WatchTasks(session_id="s1"))
    h.ctl.peer_flow(b"watcher", Flow.congested)
    h.request(fe.CloseSession(session_id="s1"))
    h.request(fe.DeleteSession(session_id="s1"))
    h.ctl.peer_flow(b"watcher", Flow.clear)
    h.pump()
    last = updates(h)[-1]
    assert last.final, last
    assert last.reason == "session s1 was deleted", last
    assert not last.tasks, last
