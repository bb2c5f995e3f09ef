"""Whole scenarios through the pure controller: sessions, tasks, executors, nodes, fencing.

Time is the harness's fake clock; nothing here sleeps or opens a socket.
"""

from __future__ import annotations

import pytest

from protocol import backend as be
from protocol import frontend as fe
from protocol.errors import ErrorCode
from protocol.types import ApplicationSpec, ExecutorState, NodeState, SessionSpec, SessionState, TaskState
from tests.unit.core_harness import FakeNode, Harness

pytestmark = pytest.mark.timeout(30)


def cluster(nodes: int = 1, slots: int = 4, **config: object) -> Harness:
    h = Harness(**config)
    reply = h.request(fe.RegisterApplication(name="flmping", spec=ApplicationSpec(command="true")))
    assert isinstance(reply, fe.ApplicationReply), reply
    for i in range(nodes):
        h.add_node(f"n{i + 1}", slots)
    return h


def task_states(h: Harness, session_id: str) -> list[TaskState]:
    return [t.state for t in h.state.sessions[session_id].tasks]


def test_hundred_tasks_run_to_completion_with_their_outputs() -> None:
    """Breaks if tasks are lost, run out of order of their ids, lose their outputs, or the session's counts
    disagree with its tasks."""
    h = cluster()
    assert isinstance(h.session("s1"), fe.SessionReply)
    ids = h.tasks("s1", [str(i).encode() for i in range(100)])
    assert ids == list(range(1, 101))
    h.advance(1.0)
    reply = h.request(fe.ListTasks(session_id="s1"))
    assert isinstance(reply, fe.TasksReply)
    assert [t.state for t in reply.tasks] == [TaskState.Succeed] * 100
    assert [t.output for t in reply.tasks] == [str(i).encode() for i in range(100)]
    session = h.request(fe.GetSession(session_id="s1"))
    assert isinstance(session, fe.SessionReply)
    assert (session.session.succeed, session.session.pending, session.session.running) == (100, 0, 0)


def test_tasks_spread_over_every_executor_of_two_nodes() -> None:
    """Breaks if dispatch leaves a node idle while another queues the work, or drops or duplicates a task
    across nodes."""
    h = cluster(nodes=2, slots=2)
    h.session("s1")
    for node in h.nodes.values():
        node.auto_run = False
    h.tasks("s1", [None] * 40)
    h.advance(1.0)
    queued = {node.name: sum(len(q) for q in node.queued.values()) for node in h.nodes.values()}
    assert all(count > 0 for count in queued.values()), queued
    assert sum(queued.values()) == 40
    for node in h.nodes.values():
        node.auto_run = True
    h.advance(0.5)
    assert task_states(h, "s1") == [TaskState.Succeed] * 40


def test_failed_task_keeps_the_service_message_in_its_events() -> None:
    """Breaks if a failed task loses the service's error message, or one failure spoils the other tasks of its
    session."""
    h = cluster()
    next(iter(h.nodes.values())).fail_inputs.add(b"bad")
    h.session("s1")
    h.tasks("s1", [b"good", b"bad"])
    h.advance(1.0)
    reply = h.request(fe.GetTask(session_id="s1", task_id=2))
    assert isinstance(reply, fe.TaskReply)
    assert reply.task.state is TaskState.Failed
    assert any("ValueError: boom" in (e.message or "") for e in reply.task.events or [])
    assert h.state.sessions["s1"].tasks[0].state is TaskState.Succeed


def test_close_cancels_pending_tasks_and_releases_executors_after_delay() -> None:
    """Breaks if closing a session leaves its pending tasks pending, or still accepts new tasks (InvalidState
    expected)."""
    h = cluster(nodes=0)
    h.session("s1")
    h.tasks("s1", [None] * 5)
    closed = h.request(fe.CloseSession(session_id="s1"))
    assert isinstance(closed, fe.SessionReply)
    assert closed.session.state is SessionState.Closed
    assert task_states(h, "s1") == [TaskState.Cancelled] * 5
    refused = h.request(fe.CreateTasks(session_id="s1", inputs=[None]))
    assert isinstance(refused, fe.Error)
    assert refused.code is ErrorCode.InvalidState


def test_idle_executors_are_released_after_delay_release() -> None:
    """Breaks if executors of a closed session are kept past the application's delay_release."""
    h = Harness()
    h.request(fe.RegisterApplication(name="app", spec=ApplicationSpec(command="true", delay_release=2.0)))
    h.add_node("n1", 2)
    h.session("s1", application="app")
    h.tasks("s1", [None] * 4)
    h.advance(0.5)
    assert task_states(h, "s1") == [TaskState.Succeed] * 4
    assert h.state.executors, "executors were created for the session"
    h.request(fe.CloseSession(session_id="s1"))
    h.advance(5.0)
    assert not h.state.executors, {e.id: e.state for e in h.state.executors.values()}


def test_watch_pushes_updates_until_the_tasks_are_terminal() -> None:
    """Breaks if WatchTasks does not push each watched task's final state to the watcher."""
    h = cluster()
    node = next(iter(h.nodes.values()))
    node.auto_run = False
    h.session("s1")
    h.tasks("s1", [b"a", b"b"])
    watch = fe.WatchTasks(session_id="s1", task_ids=[1, 2])
    watch.request_id = 999
    h.ctl.handle_client(b"watcher", watch, h.now())
    h.pump()
    node.auto_run = True
    h.advance(0.5)
    pushes = [m for m in h.replies[b"watcher"] if isinstance(m, fe.TaskUpdates) and m.request_id == 999]
    final = {t.id: t.state for push in pushes for t in push.tasks}
    assert final == {1: TaskState.Succeed, 2: TaskState.Succeed}


def test_create_with_watch_pushes_each_result_once_when_terminal() -> None:
    """Breaks if `CreateTasks{watch}` pushes Pending/Running states, repeats a task, loses an
    output, or keeps the watch open after the last result."""
    h = cluster()
    h.session("s1")
    create = fe.CreateTasks(session_id="s1", inputs=[b"a", b"b", b"c"], watch=True)
    create.request_id = 777
    h.ctl.handle_client(b"runner", create, h.now())
    h.pump()
    h.advance(0.5)
    replies = [m for m in h.replies[b"runner"] if m.request_id == 777]
    assert isinstance(replies[0], fe.TasksCreated)
    pushed = [t for m in replies[1:] for t in m.tasks]  # type: ignore[attr-defined]  # every push after the first reply is a TaskUpdates (asserted next)
    assert all(isinstance(m, fe.TaskUpdates) for m in replies[1:])
    assert sorted(t.id for t in pushed) == [1, 2, 3]
    assert {t.state for t in pushed} == {TaskState.Succeed}
    assert {t.id: t.output for t in pushed} == {1: b"a", 2: b"b", 3: b"c"}
    assert len(h.ctl.watches) == 0


def test_create_with_watch_counts_against_the_watch_limit() -> None:
    """Breaks if `CreateTasks{watch}` escapes limits.max_watches_per_client, or if a refused
    one still creates its tasks."""
    h = cluster(max_watches_per_client=1)
    node = next(iter(h.nodes.values()))
    node.auto_run = False
    h.session("s1")
    assert isinstance(h.request(fe.CreateTasks(session_id="s1", inputs=[b"a"], watch=True)), fe.TasksCreated)
    refused = h.request(fe.CreateTasks(session_id="s1", inputs=[b"b"], watch=True))
    assert isinstance(refused, fe.Error)
    assert refused.code is ErrorCode.LimitExceeded
    assert len(h.state.sessions["s1"].tasks) == 1


def test_a_stopping_node_is_offered_no_executors_binds_or_tasks() -> None:
    """Breaks if the session manager keeps creating or binding executors, or launching tasks,
    on a node whose executor manager said it is draining to stop: the real one refuses each
    bind and hands its tasks back, so that is a hot loop until its goodbye."""
    h = cluster(nodes=2, slots=2)
    n1, n2 = h.nodes.values()
    n1.auto_run = n2.auto_run = False
    h.session("s1")
    h.tasks("s1", [b"x"] * 200)
    h.advance(0.5)
    assert {e.node for e in h.state.executors.values()} == {"n1", "n2"}
    n1.stopping = True
    n1.commands.clear()
    h.advance(0.5)
    view = h.ctl.node_view("n1", h.t)
    assert view is not None
    assert view.stopping
    n2.auto_run = True  # n2 works through the queue; n1 still holds what it had
    h.advance(2.0)
    offered = [c for c in n1.commands if isinstance(c, be.CreateExecutor | be.BindExecutor | be.LaunchTasks)]
    assert offered == []
    assert all(t.state is TaskState.Succeed or t.executor_id in n1.executors for t in h.state.sessions["s1"].tasks)


def test_a_node_registering_while_it_stops_is_offered_nothing_from_the_start() -> None:
    """Breaks if an executor manager that registers again while draining (the session manager
    restarted meanwhile) is offered executors until its first heartbeat says it is stopping."""
    h = cluster(nodes=0)
    node = FakeNode("n1", 2, stopping=True)
    h.nodes[node.peer] = node
    register = node.register_message()
    register.stopping = True
    h.ctl.handle_node(node.peer, register, h.now())
    h.pump()
    h.session("s1")
    h.tasks("s1", [b"x"] * 4)
    h.pump()
    view = h.ctl.node_view("n1", h.t)
    assert view is not None
    assert view.stopping
    assert not [c for c in node.commands if isinstance(c, be.CreateExecutor | be.BindExecutor | be.LaunchTasks)]


def test_create_tasks_sent_again_with_its_key_creates_nothing() -> None:
    """Breaks if a CreateTasks re-sent after a dropped connection creates its tasks twice, if
    its answer differs from the first, if it is refused once the session is closed, or if a
    re-sent `watch` does not deliver results that were already in."""
    h = cluster()
    h.session("s1")
    first = h.request(fe.CreateTasks(session_id="s1", inputs=[b"a", b"b"], key="k1"))
    assert isinstance(first, fe.TasksCreated)
    assert first.task_ids == [1, 2]
    h.advance(0.5)  # both done
    again = fe.CreateTasks(session_id="s1", inputs=[b"a", b"b"], key="k1", watch=True)
    again.request_id = 4242
    h.ctl.handle_client(b"client", again, h.now())
    h.pump()
    replies = [m for m in h.replies[b"client"] if m.request_id == 4242]
    assert isinstance(replies[0], fe.TasksCreated)
    assert replies[0].task_ids == [1, 2]
    pushed = {t.id: t.output for m in replies[1:] for t in m.tasks}  # type: ignore[attr-defined]  # every push after the first reply is a TaskUpdates
    assert pushed == {1: b"a", 2: b"b"}
    assert len(h.state.sessions["s1"].tasks) == 2
    wrong = h.request(fe.CreateTasks(session_id="s1", inputs=[b"a"], key="k1"))
    assert isinstance(wrong, fe.Error)
    assert wrong.code is ErrorCode.InvalidArgument
    h.request(fe.CloseSession(session_id="s1"))
    late = h.request(fe.CreateTasks(session_id="s1", inputs=[b"a", b"b"], key="k1"))
    assert isinstance(late, fe.TasksCreated)
    assert late.task_ids == [1, 2]


def test_unknown_ids_and_bad_arguments_get_typed_errors() -> None:
    """Breaks if an unknown id or a bad argument gets another error code (or none, or an empty message), or a
    session can be created twice."""
    h = cluster()
    cases: list[tuple[fe.Message, ErrorCode]] = [
        (fe.GetSession(session_id="nope"), ErrorCode.NotFound),
        (fe.CreateTasks(session_id="nope", inputs=[None]), ErrorCode.NotFound),
        (fe.GetApplication(name="nope"), ErrorCode.NotFound),
        (fe.CreateSession(session_id="s", spec=SessionSpec(application="nope")), ErrorCode.NotFound),
        (fe.GetTask(session_id="nope", task_id=1), ErrorCode.NotFound),
        (fe.GetNode(name="nope"), ErrorCode.NotFound),
        (fe.GetExecutor(executor_id="nope"), ErrorCode.NotFound),
        (fe.CreateSession(session_id="bad id/../", spec=SessionSpec(application="flmping")), ErrorCode.InvalidArgument),
    ]
    for request, code in cases:
        reply = h.request(request)
        assert isinstance(reply, fe.Error), (request, reply)
        assert reply.code is code, (request, reply)
        assert reply.message
    h.session("s1")
    again = h.session("s1")
    assert isinstance(again, fe.Error)
    assert again.code is ErrorCode.AlreadyExists


def test_open_session_checks_the_spec_of_an_existing_session() -> None:
    """Breaks if OpenSession accepts another spec for an existing session, fails to create a new one, or opens
    a missing one without a spec."""
    h = cluster()
    h.session("s1", min_instances=0)
    same = h.request(fe.OpenSession(session_id="s1", spec=SessionSpec(application="flmping")))
    assert isinstance(same, fe.SessionReply)
    other = h.request(fe.OpenSession(session_id="s1", spec=SessionSpec(application="flmping", priority=5)))
    assert isinstance(other, fe.Error)
    assert other.code is ErrorCode.InvalidArgument
    created = h.request(fe.OpenSession(session_id="s2", spec=SessionSpec(application="flmping")))
    assert isinstance(created, fe.SessionReply)
    missing = h.request(fe.OpenSession(session_id="s3"))
    assert isinstance(missing, fe.Error)
    assert missing.code is ErrorCode.NotFound


def test_silent_node_goes_unknown_then_not_ready_and_its_tasks_run_elsewhere() -> None:
    """Breaks if a silent node is not Unknown after the liveness window and NotReady after the drain, or its
    tasks do not rerun on the other node."""
    h = cluster(nodes=2, slots=1, heartbeat_interval=1.0, heartbeat_liveness=3, drain_timeout=5.0)
    n1, n2 = list(h.nodes.values())
    n1.auto_run = n2.auto_run = False
    h.session("s1")
    h.tasks("s1", [None] * 4)
    h.advance(0.5)
    assert any(n1.queued.values())
    assert any(n2.queued.values())
    n1.online = False
    h.advance(3.5)
    assert h.view("n1").state is NodeState.Unknown
    h.advance(6.0)
    assert h.view("n1").state is NodeState.NotReady
    assert all(e.node != "n1" for e in h.state.executors.values())
    n2.auto_run = True
    h.advance(1.0)
    assert task_states(h, "s1") == [TaskState.Succeed] * 4
    assert h.view("n2").state is NodeState.Ready


def test_stale_epoch_and_sequence_gap_are_fenced() -> None:
    """Breaks if a message from an old epoch or after a sequence gap is taken instead of answered with
    Reregister."""
    h = cluster()
    node = next(iter(h.nodes.values()))
    h.ctl.handle_node(node.peer, be.Heartbeat(epoch=node.epoch - 1, seq=node.seq + 1), h.now())
    h.pump()
    assert node.errors
    assert node.errors[-1].code is ErrorCode.Reregister
    h.ctl.handle_node(node.peer, be.Heartbeat(epoch=node.epoch, seq=node.seq + 5), h.now())
    h.pump()
    assert len(node.errors) == 2
    assert node.errors[-1].code is ErrorCode.Reregister


def test_a_second_live_manager_with_the_same_name_is_refused() -> None:
    """Breaks if a second executor manager may register under a live node's name instead of getting
    DuplicateNode."""
    h = cluster()
    h.add_node("n1", 4, incarnation="other")
    intruder = next(n for n in h.nodes.values() if n.incarnation == "other")
    assert intruder.errors
    assert intruder.errors[-1].code is ErrorCode.DuplicateNode
    assert not intruder.registered


def test_completion_from_a_stale_attempt_is_ignored() -> None:
    """Breaks if a completion naming another attempt finishes the task or is not counted as rejected."""
    h = cluster(nodes=1, slots=1)
    node = next(iter(h.nodes.values()))
    node.auto_run = False
    h.session("s1")
    h.tasks("s1", [b"x"])
    h.advance(0.5)
    executor_id, queued = next((e, q) for e, q in node.queued.items() if q)
    stale = be.TaskCompleted(
        executor_id=executor_id, session_id="s1", task_id=1, attempt=queued[0].attempt + 1, state=TaskState.Succeed
    )
    node.outbox.append(stale)
    h.pump()
    assert task_states(h, "s1") == [TaskState.Running]
    assert h.ctl.stats()["stale_completions_rejected_total"] >= 1


def test_reregistration_without_executors_retries_their_tasks() -> None:
    """Breaks if a node that comes back without its executors leaves their running tasks stuck instead of
    retrying them."""
    h = cluster(nodes=1, slots=2, task_retry_limit=3)
    node = next(iter(h.nodes.values()))
    node.auto_run = False
    h.session("s1")
    h.tasks("s1", [None] * 3)
    h.advance(0.5)
    assert task_states(h, "s1").count(TaskState.Running) >= 1
    restarted = type(node)(name="n1", slots=2, incarnation="inc-2")
    del h.nodes[node.peer]
    h.advance(2.5, heartbeat=lambda n: False)  # quiet long enough not to look like a duplicate
    h.reregister(restarted)
    h.advance(1.0)
    assert task_states(h, "s1") == [TaskState.Succeed] * 3
    assert all(e.node == "n1" for e in h.state.executors.values())
    retried = [t for t in h.state.sessions["s1"].tasks if t.attempt > 1]
    assert retried, "tasks that were running on the lost executors were retried"


def test_a_task_that_always_kills_its_executor_fails_after_the_retry_limit() -> None:
    """Breaks if a task whose instance always dies is retried forever, or fails without the exit reason in its
    events."""
    h = cluster(nodes=1, slots=1, task_retry_limit=2)
    node = next(iter(h.nodes.values()))
    node.auto_run = False
    h.session("s1")
    h.tasks("s1", [b"poison"])
    for _ in range(5):
        h.advance(0.5)
        for executor_id, session in list(node.executors.items()):
            if session is not None and node.queued.get(executor_id):
                node.queued[executor_id].clear()
                node.executors[executor_id] = None
                node.outbox.append(
                    be.ExecutorUnbound(
                        executor_id=executor_id, session_id=session, reason="instance exited with code 1"
                    )
                )
        h.pump()
    task = h.state.sessions["s1"].tasks[0]
    assert task.state is TaskState.Failed
    assert any("instance exited with code 1" in (e.message or "") for e in task.events or []), task.events


def test_goodbye_cleans_the_node_up_at_once() -> None:
    """Breaks if a node's Goodbye does not make it NotReady and release its executors at once (without waiting
    out the drain)."""
    h = cluster(nodes=1)
    node = next(iter(h.nodes.values()))
    h.session("s1")
    h.tasks("s1", [None])
    h.advance(0.5)
    node.seq += 1
    h.ctl.handle_node(node.peer, be.Goodbye(epoch=node.epoch, seq=node.seq), h.now())
    h.pump()
    assert h.view("n1").state is NodeState.NotReady
    assert not [e for e in h.state.executors.values() if e.state is not ExecutorState.Released]


def test_an_executor_out_of_work_goes_to_a_waiting_session_without_waiting_for_the_interval() -> None:
    """Breaks if an executor whose session ran out of tasks stays with it until the next
    schedule interval while another session waits for capacity: with many sessions on few
    slots, that wait (up to `schedule_interval` per binding) was most of each session's time."""
    h = cluster(slots=1, schedule_interval=60.0)
    (node,) = h.nodes.values()
    node.auto_run = False
    h.session("s1")
    h.session("s2")
    h.tasks("s1", [None] * 3)
    h.tasks("s2", [None] * 3)
    # No time passes from here: every step must follow from the last one, not from a tick.
    node.run_tasks()
    h.pump()
    assert task_states(h, "s1") == [TaskState.Succeed] * 3
    (executor,) = [e for e in h.state.executors.values() if e.state is not ExecutorState.Released]
    assert executor.session_id == "s2", executor
    node.run_tasks()
    h.pump()
    assert task_states(h, "s2") == [TaskState.Succeed] * 3
