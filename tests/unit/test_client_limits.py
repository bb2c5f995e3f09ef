"""Memory per request and per client, through the pure controller: paged task lists and watch
pushes, the watch and subscription limits (per request, per client, in all), the global task
limit, and what the core does for a client that does not read (as the daemon reports it).

What would break: one request or one client making the session manager build and hold an
unbounded reply (a whole session in one message), one key locking every dashboard out, a
watch lost because its client was slow, or a silent client's watches kept forever."""

from __future__ import annotations

import msgspec
import pytest

from flamed.core.clients import Flow
from flamed.core.watches import FOLD_AFTER
from protocol import frontend as fe
from protocol.errors import ErrorCode
from protocol.types import TaskState
from tests.unit.core_harness import Harness
from tests.unit.test_controller_flow import cluster

pytestmark = pytest.mark.timeout(60)

ENCODE = msgspec.msgpack.Encoder().encode


def limit(reply: fe.Message, key: str) -> None:
    assert isinstance(reply, fe.Error), reply
    assert reply.code is ErrorCode.LimitExceeded, reply
    assert key in reply.message, reply


def send(h: Harness, request: fe.Message, peer: bytes, request_id: int, client: bytes = b"") -> None:
    request.request_id = request_id
    h.ctl.handle_client(peer, request, h.now(), client)  # type: ignore[arg-type]  # any frontend message, also ones the daemon's decoder would refuse
    h.pump()


def updates(h: Harness, peer: bytes, request_id: int) -> list[fe.TaskUpdates]:
    return [m for m in h.replies.get(peer, []) if isinstance(m, fe.TaskUpdates) and m.request_id == request_id]


def hold(h: Harness) -> None:
    """Tasks stay Pending until a test lets the node run them."""
    for node in h.nodes.values():
        node.auto_run = False


def run_all(h: Harness) -> None:
    for node in h.nodes.values():
        node.auto_run = True
    h.advance(1.0)


# ---------------------------------------------------------------------------- ListTasks pages


def test_list_tasks_pages_walk_the_session_exactly_once_within_the_maxima() -> None:
    """Each reply holds at most max_page_tasks tasks and max_page_bytes bytes (a page of one
    big task excepted), and following `next_cursor` yields every task once, in order."""
    h = cluster(max_page_tasks=7, max_page_bytes=3000)
    h.session("s1")
    inputs = [b"x" * (2500 if i % 9 == 4 else i * 20) for i in range(60)]
    h.tasks("s1", inputs)
    seen: list[int] = []
    cursor = 0
    while True:
        reply = h.request(fe.ListTasks(session_id="s1", cursor=cursor))
        assert isinstance(reply, fe.TasksReply), reply
        assert 1 <= len(reply.tasks) <= 7
        if len(reply.tasks) > 1:
            assert len(ENCODE(reply)) <= 3000
        seen.extend(t.id for t in reply.tasks)
        if not reply.next_cursor:
            break
        assert reply.next_cursor == reply.tasks[-1].id + 1
        cursor = reply.next_cursor
    assert seen == list(range(1, 61))
    assert [t.input for t in h.state.sessions["s1"].tasks] == inputs


def test_an_old_list_tasks_gets_the_first_page_and_the_cursor_and_page_size_is_clamped() -> None:
    """A client that sends no page fields gets the first page and where the next starts; a
    page size over the server's maximum is the maximum."""
    h = cluster(max_page_tasks=10)
    h.session("s1")
    h.tasks("s1", [None] * 25)
    old = h.request(fe.ListTasks(session_id="s1"))
    assert isinstance(old, fe.TasksReply)
    assert [t.id for t in old.tasks] == list(range(1, 11))
    assert old.next_cursor == 11
    small = h.request(fe.ListTasks(session_id="s1", cursor=21, page_size=3))
    assert isinstance(small, fe.TasksReply)
    assert [t.id for t in small.tasks] == [21, 22, 23]
    assert small.next_cursor == 24
    big = h.request(fe.ListTasks(session_id="s1", cursor=16, page_size=1000))
    assert isinstance(big, fe.TasksReply)
    assert [t.id for t in big.tasks] == list(range(16, 26))
    assert big.next_cursor == 0
    past = h.request(fe.ListTasks(session_id="s1", cursor=99))
    assert isinstance(past, fe.TasksReply)
    assert past.tasks == []
    assert past.next_cursor == 0


# ---------------------------------------------------------------------------- watch pages


def test_a_whole_session_watch_first_push_is_paged_over_turns() -> None:
    """Breaks if the first push of a whole-session watch is one message (a million-task
    session), if one turn builds all of it (a loop stall), or if a task is skipped."""
    h = cluster(max_page_tasks=10, max_page_bytes=1000)
    hold(h)
    h.session("s1")
    h.tasks("s1", [None] * 50)
    send(h, fe.WatchTasks(session_id="s1", include_data=False), b"tui", 5)
    turns = 1
    while h.ctl.watches.more:  # pages still due: the daemon turns again at once
        assert h.ctl.next_deadline() == 0.0
        h.pump()
        turns += 1
    pages = updates(h, b"tui", 5)
    assert turns >= 3, "every page was built in one turn"
    assert [t.id for p in pages for t in p.tasks] == list(range(1, 51))
    assert [p.more for p in pages] == [True] * (len(pages) - 1) + [False]
    assert all(len(p.tasks) <= 10 and len(ENCODE(p)) <= 1000 for p in pages)
    assert len(h.ctl.watches) == 1  # the session is open: the watch goes on


def test_a_congested_peer_gets_no_pushes_and_then_every_change_coalesced() -> None:
    """Breaks if pushes are built for a client whose queue is full (memory), or if its watch
    is dropped or loses a change while it is merely slow."""
    h = cluster()
    hold(h)
    h.session("s1")
    h.tasks("s1", [b"a", b"b", b"c"])
    send(h, fe.WatchTasks(session_id="s1", task_ids=[1, 2, 3]), b"slow", 9)
    assert [t.id for t in updates(h, b"slow", 9)[0].tasks if not t.state.is_terminal] == [1, 2, 3]
    h.ctl.peer_flow(b"slow", Flow.congested)
    run_all(h)
    assert len(updates(h, b"slow", 9)) == 1, "pushed to a congested peer"
    assert len(h.ctl.watches) == 1
    h.ctl.peer_flow(b"slow", Flow.clear)
    h.pump()
    later = updates(h, b"slow", 9)[1:]
    assert len(later) == 1  # coalesced: one push with the latest state of each task
    assert {t.id: (t.state, t.output) for t in later[0].tasks} == {
        1: (TaskState.Succeed, b"a"),
        2: (TaskState.Succeed, b"b"),
        3: (TaskState.Succeed, b"c"),
    }
    assert len(h.ctl.watches) == 0  # all terminal: the watch ended


def test_a_congested_whole_session_watch_holds_a_bounded_set_of_changes() -> None:
    """Breaks if a whole-session watch of a slow client keeps one pending id per changed task
    (a million-task session would be a million ids per watch), or loses a change."""
    h = cluster(slots=8)
    hold(h)
    h.session("s1")
    h.tasks("s1", [b"%d" % i for i in range(3000)])
    send(h, fe.WatchTasks(session_id="s1"), b"slow", 3)
    h.ctl.peer_flow(b"slow", Flow.congested)
    for node in h.nodes.values():
        node.auto_run = True
    for _ in range(40):
        h.advance(0.5)
        (watch,) = h.ctl.watches.by_peer[b"slow"].values()
        assert len(watch.pending) <= FOLD_AFTER
    assert all(t.state is TaskState.Succeed for t in h.state.sessions["s1"].tasks)
    h.ctl.peer_flow(b"slow", Flow.clear)
    h.pump()
    while h.ctl.watches.more:
        h.pump()
    final = {t.id: t.state for p in updates(h, b"slow", 3) for t in p.tasks}
    assert final == dict.fromkeys(range(1, 3001), TaskState.Succeed)


def test_a_full_peer_gets_no_answer_to_reads_but_its_writes_are_served() -> None:
    """Breaks if the session manager keeps building replies (pages of a big session) that a
    client never reads, or if it stops serving that client's changes."""
    h = cluster()
    h.session("s1")
    h.ctl.peer_flow(b"deaf", Flow.full)
    send(h, fe.ListTasks(session_id="s1"), b"deaf", 1)
    send(h, fe.Ping(), b"deaf", 2)
    assert not h.replies.get(b"deaf")
    assert h.ctl.counters["client_reads_unanswered"] == 2
    send(h, fe.CreateTasks(session_id="s1", inputs=[b"x"]), b"deaf", 3)
    assert len(h.state.sessions["s1"].tasks) == 1


def test_a_congested_subscriber_gets_a_fresh_snapshot_when_it_reads_again() -> None:
    """Breaks if a dashboard that missed updates while slow goes on from a stale picture, or
    if updates are built for it while it does not read."""
    h = cluster()
    send(h, fe.SubscribeCluster(), b"tui", 4)
    assert isinstance(h.replies[b"tui"][0], fe.ClusterSnapshot)
    h.ctl.peer_flow(b"tui", Flow.congested)
    h.session("s1")
    h.tasks("s1", [b"x"])
    h.advance(2.0)
    assert len(h.replies[b"tui"]) == 1
    h.ctl.peer_flow(b"tui", Flow.clear)
    h.pump()
    fresh = h.replies[b"tui"][1]
    assert isinstance(fresh, fe.ClusterSnapshot)
    assert fresh.request_id == 4
    assert [s.id for s in fresh.sessions] == ["s1"]
    assert fresh.sessions[0].succeed == 1


# ---------------------------------------------------------------------------- limits


def test_watch_limits_per_request_per_client_and_in_all() -> None:
    """Each limit refuses with LimitExceeded naming its key and leaves nothing behind; ids are
    counted for WatchTasks and CreateTasks{watch} alike and freed when their tasks end."""
    h = cluster(max_watch_task_ids=5, max_watched_tasks_per_client=8, max_watched_tasks=12)
    hold(h)
    h.session("s1")
    h.tasks("s1", [None] * 20)
    limit(h.request(fe.WatchTasks(session_id="s1", task_ids=[1, 2, 3, 4, 5, 6]), b"c1"), "limits.max_watch_task_ids")
    send(h, fe.WatchTasks(session_id="s1", task_ids=[1, 2, 3, 4, 5]), b"c1", 100)
    limit(h.request(fe.WatchTasks(session_id="s1", task_ids=[6, 7, 8, 9]), b"c1"), "max_watched_tasks_per_client")
    send(h, fe.WatchTasks(session_id="s1", task_ids=[1, 2, 3, 4, 5]), b"c1", 100)  # replaces: no more room
    assert h.ctl.watches.watched_by(b"c1") == 5
    assert isinstance(h.request(fe.WatchTasks(session_id="s1", task_ids=[6, 7, 8]), b"c1"), fe.TaskUpdates)
    refused = h.request(fe.CreateTasks(session_id="s1", inputs=[None] * 5, watch=True), b"c2")
    limit(refused, "limits.max_watched_tasks")
    assert len(h.state.sessions["s1"].tasks) == 20, "a refused CreateTasks{watch} created tasks"
    assert isinstance(h.request(fe.CreateTasks(session_id="s1", inputs=[None] * 4, watch=True), b"c2"), fe.TasksCreated)
    assert h.ctl.stats()["watched_tasks"] == 12
    run_all(h)
    assert h.ctl.watches.total_watched == 0
    assert len(h.ctl.watches) == 0
    assert isinstance(h.request(fe.WatchTasks(session_id="s1", task_ids=[9, 10, 11]), b"c1"), fe.TaskUpdates)


def test_one_client_on_many_connections_shares_its_limits() -> None:
    """Breaks if a CURVE key escapes the per-client limits by opening more connections, or if
    one key can take every cluster subscription and lock other dashboards out."""
    h = cluster(max_watches_per_client=1, max_subscriptions_per_client=2, max_subscribers=3)
    hold(h)
    h.session("s1")
    h.tasks("s1", [None])
    send(h, fe.WatchTasks(session_id="s1"), b"a1", 1, client=b"key:alice")
    send(h, fe.WatchTasks(session_id="s1"), b"a2", 1, client=b"key:alice")
    limit(h.replies[b"a2"][-1], "limits.max_watches_per_client")
    send(h, fe.WatchTasks(session_id="s1"), b"b1", 1, client=b"key:bob")
    assert isinstance(h.replies[b"b1"][-1], fe.TaskUpdates)
    for peer in (b"a1", b"a2", b"a3"):
        send(h, fe.SubscribeCluster(), peer, 2, client=b"key:alice")
    assert isinstance(h.replies[b"a2"][-1], fe.ClusterSnapshot)
    limit(h.replies[b"a3"][-1], "limits.max_subscriptions_per_client")
    send(h, fe.SubscribeCluster(), b"b1", 2, client=b"key:bob")
    assert isinstance(h.replies[b"b1"][-1], fe.ClusterSnapshot)
    send(h, fe.SubscribeCluster(), b"c1", 2, client=b"key:carol")
    limit(h.replies[b"c1"][-1], "limits.max_subscribers")


def test_the_session_manager_holds_at_most_max_tasks() -> None:
    """Breaks if many sessions together can hold more tasks than limits.max_tasks, or if the
    count is not given back when a session is deleted."""
    h = cluster(nodes=0, max_tasks=10)
    h.session("s1")
    h.session("s2")
    h.tasks("s1", [None] * 6)
    limit(h.request(fe.CreateTasks(session_id="s2", inputs=[None] * 5)), "limits.max_tasks")
    assert h.tasks("s2", [None] * 4) == [1, 2, 3, 4]
    h.request(fe.CloseSession(session_id="s1"))
    h.request(fe.DeleteSession(session_id="s1"))
    assert h.tasks("s2", [None] * 6) == list(range(5, 11))


def test_a_silent_peer_is_forgotten_after_client_ttl_and_a_slow_one_that_talks_is_kept() -> None:
    """Breaks if watches are dropped because a client is slow (congested) rather than silent,
    or if a silent client's watches and queued replies are kept forever."""
    h = cluster(client_ttl=5.0)
    hold(h)
    h.session("s1")
    h.tasks("s1", [None])
    for peer in (b"slow", b"silent"):
        send(h, fe.WatchTasks(session_id="s1"), peer, 1)
        h.ctl.peer_flow(peer, Flow.congested)
    for _ in range(4):
        h.advance(2.0)
        send(h, fe.Ping(), b"slow", 2)
    assert set(h.ctl.watches.by_peer) == {b"slow"}
    assert b"silent" not in h.ctl.clients.peers
    assert not h.ctl.clients.full(b"silent")
    h.t += 6.0
    h.ctl.tick(h.now())
    assert h.ctl.flush(h.now()).forgotten == [b"slow"]
    assert len(h.ctl.watches) == 0


def test_a_watch_ends_with_its_session_even_when_its_peer_is_slow() -> None:
    """Breaks if the watch of a congested client outlives the deletion of its session: it
    would keep the deleted session's tasks in memory, and attach to a new session of the same
    id (whose task ids it does not know: the session manager crashed building its pages)."""
    h = cluster(nodes=0)
    h.session("s1")
    h.tasks("s1", [None] * 5)
    send(h, fe.WatchTasks(session_id="s1"), b"slow", 1)
    send(h, fe.WatchTasks(session_id="s1", task_ids=[4, 5]), b"slow", 2)
    h.ctl.peer_flow(b"slow", Flow.congested)
    h.request(fe.CloseSession(session_id="s1"))
    assert len(h.ctl.watches) == 2  # the cancellations wait for the slow client
    h.request(fe.DeleteSession(session_id="s1"))
    assert len(h.ctl.watches) == 0
    h.session("s1")
    h.tasks("s1", [None])
    h.ctl.peer_flow(b"slow", Flow.clear)
    h.pump()
    # Only the end of each watch reaches the client: no page of the new session of that id.
    pushes = [m for m in h.replies[b"slow"][2:] if isinstance(m, fe.TaskUpdates)]
    assert pushes, pushes
    assert all(m.final and (not m.tasks) and ("was deleted" in m.reason) for m in pushes), pushes


def test_a_peer_that_only_sent_bad_frames_is_forgotten_too() -> None:
    """Breaks if a connection known only from frames that did not decode is never forgotten:
    the replies queued for it after it went away would be kept forever."""
    h = cluster(client_ttl=5.0)
    h.ctl.reject_client_frame(b"junk", ErrorCode.BadMessage, "malformed", 0, h.now())
    assert b"junk" in h.ctl.clients.peers
    h.t += 6.0
    h.ctl.tick(h.now())
    assert b"junk" in h.ctl.flush(h.now()).forgotten
