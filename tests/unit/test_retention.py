"""Retention in the pure core (issue 17): closed sessions expire after `closed_session_ttl`,
finished tasks beyond `max_finished_tasks` go (closed sessions first, then the oldest finished
tasks of open sessions), idle open sessions close after `idle_session_ttl`; all by records, so
a replay and a snapshot rebuild the same state; reads of what expired say so.

Fake clock (`Harness.advance`), no sockets."""

from __future__ import annotations

import msgspec
import pytest

from flamed.core import records as r
from flamed.core import retention as retention_module
from flamed.core import state as state_module
from flamed.core.clients import Flow
from flamed.core.snapshot import decode_state, encode_state, to_snapshot
from flamed.core.state import ClusterState
from flamed.core.tasks import EXPIRED_TASK
from protocol import backend as be
from protocol import frontend as fe
from protocol.errors import ErrorCode
from protocol.types import ApplicationSpec, TaskState
from tests.unit.core_harness import Harness

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(r.AnyRecord)

pytestmark = pytest.mark.timeout(30)


def harness(**config: object) -> Harness:
    h = Harness(heartbeat_interval=1.0, retention_interval=1.0, **config)
    h.request(fe.RegisterApplication(name="flmping", spec=ApplicationSpec(command="true")))
    h.add_node("n1", slots=2)
    return h


def run_session(h: Harness, session_id: str, tasks: int, *, close: bool = True) -> None:
    """A session whose `tasks` all succeed (the fake node runs them at once), then closed."""
    h.session(session_id)
    h.tasks(session_id, [f"{session_id}-{i}".encode() for i in range(tasks)])
    h.advance(0.5)
    assert h.state.sessions[session_id].counts[TaskState.Succeed] == tasks
    if close:
        reply = h.request(fe.CloseSession(session_id=session_id))
        assert isinstance(reply, fe.SessionReply), reply


def error_of(reply: fe.Message) -> str:
    assert isinstance(reply, fe.Error), reply
    assert reply.code == ErrorCode.NotFound, reply
    return reply.message


def canonical(state: ClusterState) -> bytes:
    return _encoder.encode(to_snapshot(state))


def replayed(h: Harness) -> ClusterState:
    state = ClusterState()
    for record in h.records:
        state.apply(_decoder.decode(_encoder.encode(record)))
    return state


def test_closed_session_expires_after_ttl_and_reading_it_says_why() -> None:
    """A closed session is deleted with its tasks `closed_session_ttl` after closing, counted,
    and a read of it says it expired under retention, in other words than a typo'd id gets.
    Would break: closed sessions held forever (memory grows with history), or an expired
    session indistinguishable from a wrong id."""
    h = harness(closed_session_ttl=10.0)
    run_session(h, "old", 5)
    h.advance(5.0)
    assert "old" in h.state.sessions  # not yet
    run_session(h, "young", 3)
    h.advance(6.0)
    assert "old" not in h.state.sessions
    assert "young" in h.state.sessions
    assert h.ctl.counters["sessions_expired"] == 1
    assert h.ctl.counters["tasks_expired"] == 5
    assert h.state.finished_held == 3
    expired = error_of(h.request(fe.GetSession(session_id="old")))
    assert "expired under retention (closed_session_ttl)" in expired
    typo = error_of(h.request(fe.GetSession(session_id="olf")))
    assert "expired" not in typo
    assert "not found" in typo
    assert "expired under retention" in error_of(h.request(fe.GetTask(session_id="old", task_id=1)))
    assert "expired under retention" in error_of(h.request(fe.ListTasks(session_id="old")))
    events = [e.message for e in h.ctl.subscriptions.events if e.kind == "session" and e.subject == "old"]
    assert "expired under retention (closed_session_ttl)" in events
    assert any(isinstance(rec, r.SessionsExpired) and rec.session_ids == ["old"] for rec in h.records)


def test_open_sessions_never_expire_by_ttl() -> None:
    """`closed_session_ttl` applies to closed sessions only. Would break: an open session (a
    client still using it) deleted under the client's feet."""
    h = harness(closed_session_ttl=1.0)
    run_session(h, "open", 4, close=False)
    h.advance(10.0)
    assert h.state.sessions["open"].held == 4


def test_max_finished_tasks_takes_closed_sessions_first_then_oldest_finished_of_open_ones() -> None:
    """Past `max_finished_tasks`: the oldest closed sessions go whole first; then the oldest
    finished tasks of open sessions; Pending/Running never; the session's counts keep their
    totals; reads of an expired task say so, a never-created id says not found; ListTasks
    skips the expired. Would break: memory bounded only by history, or live work deleted."""
    h = harness(max_finished_tasks=10)
    h.ctl.retention.due = float("inf")  # no check until everything is in place
    run_session(h, "c1", 4)
    h.advance(0.2)
    run_session(h, "c2", 4)
    run_session(h, "c3", 1)
    run_session(h, "open", 8, close=False)
    h.ctl.retention.due = 0.0
    h.advance(1.5)
    # 17 finished, 7 too many: c1 (4), then c2 (4) go whole, oldest closed first; c3 stays
    assert "c1" not in h.state.sessions
    assert "c2" not in h.state.sessions
    assert "c3" in h.state.sessions
    assert h.state.finished_held == 9
    assert h.state.sessions["open"].held == 8
    assert "expired under retention (max_finished_tasks)" in error_of(h.request(fe.GetSession(session_id="c1")))
    # 4 more finished in "open": 13 held, 3 too many: c3 (1), then the 2 oldest of "open"
    h.tasks("open", [b"x"] * 4)
    h.advance(1.5)
    session = h.state.sessions["open"]
    assert "c3" not in h.state.sessions
    assert h.state.finished_held == 10
    assert session.held == 10
    assert session.counts[TaskState.Succeed] == 12  # totals kept
    reply = h.request(fe.GetSession(session_id="open"))
    assert isinstance(reply, fe.SessionReply)
    assert reply.session.succeed == 12
    assert any("expired under retention" in (e.message or "") for e in reply.session.events)
    expired = error_of(h.request(fe.GetTask(session_id="open", task_id=1)))
    assert "expired under retention (max_finished_tasks)" in expired
    assert "not found" in error_of(h.request(fe.GetTask(session_id="open", task_id=99)))
    listed = h.request(fe.ListTasks(session_id="open"))
    assert isinstance(listed, fe.TasksReply)
    assert [t.id for t in listed.tasks] == list(range(3, 13))
    assert h.ctl.counters["tasks_expired"] == 11
    # Unfinished tasks never go: a node that runs nothing keeps them Running/Pending.
    for node in h.nodes.values():
        node.auto_run = False
    h.tasks("open", [b"y"] * 6)
    h.advance(2.0)
    assert session.counts[TaskState.Succeed] == 12
    assert all(t is not EXPIRED_TASK and not t.state.is_terminal for t in list(session.tasks)[-6:])


def test_expired_tasks_of_an_open_session_in_the_middle_leave_gaps_that_reads_skip() -> None:
    """A Running task at the front does not stop later finished tasks from expiring: they
    leave gaps (`EXPIRED_TASK`) that every read skips and that a snapshot keeps. Would break: one stuck
    task pinning a long-lived session's whole history in memory."""
    h = harness(max_finished_tasks=2)
    h.ctl.retention.due = float("inf")  # no check until everything is in place
    h.session("s")
    node = next(iter(h.nodes.values()))
    node.auto_run = False
    h.tasks("s", [f"t{i}".encode() for i in range(7)])
    stuck: dict[str, list[be.TaskAssignment]] = {}
    for _ in range(10):  # task 1 stays Running, the others finish
        h.advance(0.5)
        for executor_id, queue in node.queued.items():
            stuck.setdefault(executor_id, []).extend(t for t in queue if t.task_id == 1)
            queue[:] = [t for t in queue if t.task_id != 1]
        node.run_tasks()
        h.pump()
    session = h.state.sessions["s"]
    assert session.counts[TaskState.Succeed] == 6
    h.ctl.retention.due = 0.0
    h.advance(2.0)
    assert session.finished_held() == 2
    assert session.live(1).state is TaskState.Running
    assert [session.task(i) is None for i in range(1, 8)] == [False, True, True, True, True, False, False]
    listed = h.request(fe.ListTasks(session_id="s"))
    assert isinstance(listed, fe.TasksReply)
    assert [t.id for t in listed.tasks] == [1, 6, 7]
    restored = decode_state(encode_state(h.state))
    gaps = [session.task(i) is None for i in range(1, 8)]
    assert [restored.sessions["s"].task(i) is None for i in range(1, 8)] == gaps
    assert restored.sessions["s"].tasks[1] is EXPIRED_TASK  # the shared marker, not a copy
    assert canonical(restored) == canonical(h.state)
    assert canonical(replayed(h)) == canonical(h.state)
    # once task 1 finishes and expires too, the front is cut off (no None slots are kept)
    for executor_id, tasks in stuck.items():
        node.queued[executor_id] = tasks + node.queued.get(executor_id, [])
    node.run_tasks()
    h.pump()
    h.advance(2.0)
    assert session.base == 5
    assert all(t is not EXPIRED_TASK for t in session.tasks)


def test_idempotency_keys_go_with_their_tasks() -> None:
    """A `CreateTasks` key is forgotten once all its tasks expired. Would break: keys kept per
    open session forever (a long-lived session's memory grows with every batch)."""
    h = harness(max_finished_tasks=2)
    h.session("s")
    for i in range(5):
        h.request(fe.CreateTasks(session_id="s", inputs=[b"a", b"b"], key=f"k{i}"))
        h.advance(1.0)
    h.advance(2.0)
    session = h.state.sessions["s"]
    assert session.finished_held() == 2
    assert list(session.batches) == ["k4"]


def test_replay_and_snapshot_rebuild_the_state_after_expiry() -> None:
    """Expiry is records: replaying the log, and a snapshot of the state, both rebuild what
    expired as expired and the rest intact, tombstones included (invariant I8). Would break:
    a restart bringing expired sessions back, or losing held ones."""
    h = harness(closed_session_ttl=3.0, max_finished_tasks=6)
    run_session(h, "a", 3)
    run_session(h, "b", 2)
    run_session(h, "open", 5, close=False)
    h.advance(4.0)
    assert "a" not in h.state.sessions
    rebuilt = replayed(h)
    assert canonical(rebuilt) == canonical(h.state)
    assert rebuilt.expired_sessions == h.state.expired_sessions
    assert rebuilt.finished_held == h.state.finished_held
    assert rebuilt.closed == h.state.closed
    restored = decode_state(encode_state(h.state))
    assert canonical(restored) == canonical(h.state)
    assert restored.expired_sessions == h.state.expired_sessions
    assert restored.finished_held == h.state.finished_held
    assert restored.sessions["open"].counts == h.state.sessions["open"].counts


def test_idle_session_ttl_closes_idle_open_sessions_only_when_set() -> None:
    """With `idle_session_ttl` an open session with nothing pending that did nothing for that
    long is closed (an event says why), then expires as closed; off (0) by default. Would
    break: abandoned sessions held forever, or sessions closed under a working client."""
    h = harness()
    run_session(h, "quiet", 2, close=False)
    h.advance(30.0)
    assert h.state.sessions["quiet"].state.value == "Open"
    h = harness(idle_session_ttl=5.0, closed_session_ttl=5.0)
    run_session(h, "quiet", 2, close=False)
    run_session(h, "busy", 1, close=False)
    h.advance(3.0)
    h.tasks("busy", [b"again"])
    h.advance(3.0)
    assert h.state.sessions["quiet"].state.value == "Closed"
    assert any("idle_session_ttl" in (e.message or "") for e in h.state.sessions["quiet"].events)
    assert h.state.sessions["busy"].state.value == "Open"
    assert h.ctl.counters["sessions_closed_idle"] == 1
    h.advance(6.0)
    assert "quiet" not in h.state.sessions


def test_expired_session_ids_are_remembered_in_a_bounded_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the last `EXPIRED_REMEMBERED` expired ids are kept for the "expired" answer.
    Would break: the tombstones themselves growing with history."""
    monkeypatch.setattr(state_module, "EXPIRED_REMEMBERED", 3)
    h = harness(closed_session_ttl=1.0)
    for i in range(6):
        run_session(h, f"s{i}", 1)
    h.advance(3.0)
    assert list(h.state.expired_sessions) == ["s3", "s4", "s5"]
    assert "not found" in error_of(h.request(fe.GetSession(session_id="s0")))
    assert "expired" in error_of(h.request(fe.GetSession(session_id="s5")))


def test_a_new_session_may_take_an_expired_id() -> None:
    """An expired id is free again: creating it makes a new session that reads normally."""
    h = harness(closed_session_ttl=1.0)
    run_session(h, "s", 1)
    h.advance(3.0)
    assert "s" in h.state.expired_sessions
    run_session(h, "s", 2, close=False)
    assert "s" not in h.state.expired_sessions
    reply = h.request(fe.GetSession(session_id="s"))
    assert isinstance(reply, fe.SessionReply)
    assert reply.session.succeed == 2


def test_a_watch_on_ids_that_expire_ends() -> None:
    """A watch waiting for a task that expires before it was pushed (its client does not read)
    ends, with its final push, instead of waiting forever and holding its watched-ids count.
    Would break: watches (and the per-client watched limit) leaking for expired tasks."""
    h = harness(max_finished_tasks=1)
    h.session("s")
    node = next(iter(h.nodes.values()))
    node.auto_run = False
    ids = h.tasks("s", [b"a", b"b"])
    peer = b"watcher"
    h.request(fe.WatchTasks(session_id="s", task_ids=[ids[0]]), peer=peer)
    assert h.ctl.watches.total_watched == 1
    h.ctl.peer_flow(peer, Flow.congested)  # it does not read: no pages are built for it
    node.run_tasks()
    h.pump()
    h.advance(2.0)
    assert h.state.sessions["s"].was_expired(ids[0])
    assert h.ctl.watches.total_watched == 0
    assert len(h.ctl.watches) == 0
    finals = [m for m in h.replies[peer] if isinstance(m, fe.TaskUpdates) and m.final]
    assert finals


def test_a_tick_deletes_a_bounded_number_of_sessions_and_the_next_comes_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many sessions due at once (e.g. after a long stop) go in bounded ticks, the next one
    due at once, not one huge turn nor one tick per check_interval. Would break: a loop turn
    as long as the backlog, or a backlog that takes hours to clear."""
    monkeypatch.setattr(retention_module, "SESSIONS_PER_TICK", 2)
    h = harness(closed_session_ttl=1.0)
    h.ctl.retention.due = float("inf")
    for i in range(5):
        run_session(h, f"s{i}", 1)
    h.advance(2.0)
    h.ctl.retention.due = 0.0
    h.ctl.tick(h.now())
    assert len(h.state.sessions) == 3
    assert h.ctl.retention.due == h.t
    h.ctl.tick(h.now())
    h.ctl.tick(h.now())
    h.pump()
    assert not h.state.sessions
    assert [len(rec.session_ids) for rec in h.records if isinstance(rec, r.SessionsExpired)] == [2, 2, 1]


def test_stats_totals_come_from_the_state_and_survive_expiry_replay_and_snapshot() -> None:
    """Breaks if GetStats' task and session totals are process counters again (a restart
    resets them), drop what expired under retention, or differ between a replay of the log
    and a snapshot (they would jump at a restart)."""
    h = harness(max_finished_tasks=10)
    for name in ("c1", "c2", "c3"):
        run_session(h, name, 4)
    run_session(h, "open", 8, close=False)
    h.tasks("open", [b"x"] * 4)
    h.advance(1.5)
    assert "c1" not in h.state.sessions  # expired whole
    assert h.state.sessions["open"].expired_tasks > 0  # and some of the open one's tasks
    totals = h.state.totals()
    assert totals["sessions_created_total"] == 4
    assert totals["tasks_created_total"] == 24
    assert totals["tasks_succeeded_total"] == totals["tasks_completed_total"] == 24
    assert totals["sessions_expired_total"] == h.ctl.counters["sessions_expired"]
    assert totals["tasks_expired_total"] == h.ctl.counters["tasks_expired"]
    assert h.ctl.stats()["tasks_created_total"] == 24
    assert replayed(h).totals() == totals
    assert decode_state(encode_state(h.state)).totals() == totals


def test_a_long_lived_session_is_limited_by_the_tasks_it_holds_not_by_its_history() -> None:
    """`limits.max_tasks_per_session` counts the tasks a session holds: once retention expired
    its oldest finished tasks, a long-lived session takes new ones past the limit's number of
    tasks ever created, and is still refused when it would hold more. Would break: a session
    open for months refused forever once it created 10 million tasks (the soak found it)."""
    h = harness(max_finished_tasks=4, max_tasks_per_session=6)
    h.ctl.retention.due = float("inf")  # no check until the session is full
    run_session(h, "long", 6, close=False)
    refused = h.request(fe.CreateTasks(session_id="long", inputs=[b"x"]))
    assert isinstance(refused, fe.Error), refused
    assert refused.code == ErrorCode.LimitExceeded, refused
    assert "limits.max_tasks_per_session" in refused.message
    h.ctl.retention.due = 0.0
    h.advance(1.5)  # retention: 2 of the 6 finished go
    assert h.state.sessions["long"].held == 4
    assert h.tasks("long", [b"a", b"b"]) == [7, 8]  # 8 created, 6 held
    refused = h.request(fe.CreateTasks(session_id="long", inputs=[b"c"]))
    assert isinstance(refused, fe.Error), refused
    assert refused.code == ErrorCode.LimitExceeded, refused
