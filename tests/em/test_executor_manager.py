"""The executor manager as a subprocess against a fake session manager (a raw ROUTER)."""

from __future__ import annotations

import json
import signal
import time

import pytest

from protocol import backend as be
from protocol.codec import PROTOCOL_VERSION
from protocol.errors import ErrorCode
from protocol.types import TaskState
from tests.em.contexts import RESREQ, bind, completed, flmping_app, new_id, of_type, probe_app, session, tasks
from tests.support.daemons import ExecutorManagerProcess
from tests.support.fake_backend import FakeSessionManager
from tests.support.waiting import wait_for

# Every test here starts a real executor manager (and its instances).
pytestmark = pytest.mark.integration


def bound_probe(executor_id: str, running: list[be.TaskAssignment]) -> be.ExecutorAssignment:
    """A snapshot entry: `executor_id` bound to session s1 of the probe app, running `running`."""
    return be.ExecutorAssignment(
        executor_id=executor_id,
        state="Bound",
        resreq=RESREQ,
        session=session("s1"),
        application=probe_app(),
        tasks=running,
    )


@pytest.mark.timeout(90)
def test_flmping_tasks_run_and_the_executor_is_released(sm: FakeSessionManager, em: ExecutorManagerProcess) -> None:
    """Register, create + bind flmping, run 50 tasks, unbind, release, stop: Goodbye and no
    instance left. Breaks if any step of the executor lifecycle or the stop path regresses."""
    register = sm.register()
    assert register.protocol_version == PROTOCOL_VERSION
    assert register.node.name == "n1"
    assert register.node.capacity.cpu == 2
    assert register.executors == []
    executor_id = new_id()
    bind(sm, executor_id, "s1", flmping_app())
    assert of_type(be.ExecutorCreated, sm.reports)
    assert of_type(be.ExecutorBound, sm.reports), sm.reports
    sm.command(
        be.LaunchTasks(executor_id=executor_id, session_id="s1", tasks=tasks([None] * 49 + [b'{"duration": 5}']))
    )
    done = sm.wait_reports("50 completions", lambda rs: len(completed(rs)) >= 50 and completed(rs))
    assert [c.task_id for c in done] == list(range(1, 51))
    assert all(c.state is TaskState.Succeed for c in done)
    message = json.loads(done[-1].output or b"")["message"]
    assert message.startswith("Completed on ")
    assert message.endswith(" memory")
    assert em.instances(), "the instance should be running while bound"

    sm.command(be.UnbindExecutor(executor_id=executor_id))
    unbound = sm.wait_reports("ExecutorUnbound", lambda rs: of_type(be.ExecutorUnbound, rs))[0]
    assert unbound.session_id == "s1"
    assert unbound.unstarted == []
    wait_for("the instance to exit after unbind", lambda: not em.instances())
    sm.command(be.ReleaseExecutor(executor_id=executor_id))
    sm.wait_reports("ExecutorReleased", lambda rs: of_type(be.ExecutorReleased, rs))

    # Bind a second executor and leave it running: SIGTERM must stop it and say goodbye.
    second = new_id()
    sm.reports.clear()
    bind(sm, second, "s1", flmping_app())
    assert em.instances()
    assert em.stop(signal.SIGTERM) == 0
    goodbye = sm.wait_message(be.Goodbye)
    assert goodbye.epoch == sm.epoch
    assert em.instances() == []


@pytest.mark.timeout(60)
def test_a_recall_hands_back_the_tasks_the_instance_was_not_given(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """Breaks if `RecallTasks` takes a task the instance already holds (it would run twice once
    the session manager hands it elsewhere), takes the oldest instead of the last queued, goes
    unanswered, or if a recall for another session takes anything."""
    sm.register()
    executor_id = new_id()
    bind(sm, executor_id, "s1", flmping_app())
    sm.command(be.LaunchTasks(executor_id=executor_id, session_id="s1", tasks=tasks([b'{"duration": 400}'] * 6)))
    sm.command(be.RecallTasks(executor_id=executor_id, session_id="other", count=6))
    sm.command(be.RecallTasks(executor_id=executor_id, session_id="s1", count=10))
    answers = sm.wait_reports("two answers", lambda rs: len(of_type(be.TasksReturned, rs)) >= 2 and rs)
    other, mine = of_type(be.TasksReturned, answers)
    assert (other.session_id, other.unstarted) == ("other", [])
    returned = [k.task_id for k in mine.unstarted]
    assert returned == [6, 5, 4, 3]  # the instance holds 1 and 2 (its window for slow tasks)
    # Tasks run in order: a recalled task still queued would complete before this one.
    sm.command(be.LaunchTasks(executor_id=executor_id, session_id="s1", tasks=tasks([None], first=7)))
    done = sm.wait_reports("task 7", lambda rs: any(c.task_id == 7 for c in completed(rs)) and completed(rs))
    assert [c.task_id for c in done] == [1, 2, 7]


@pytest.mark.timeout(60)
def test_a_raising_task_fails_and_the_instance_goes_on(sm: FakeSessionManager, em: ExecutorManagerProcess) -> None:
    """on_task_invoke raising fails only that task, with the exception's type and text."""
    sm.register()
    executor_id = new_id()
    bind(sm, executor_id, "s1", probe_app())
    sm.command(be.LaunchTasks(executor_id=executor_id, session_id="s1", tasks=tasks([b"a", b"boom", b"c"])))
    done = sm.wait_reports("3 completions", lambda rs: len(completed(rs)) >= 3 and completed(rs))
    by_id = {c.task_id: c for c in done}
    assert by_id[1].state is TaskState.Succeed
    assert by_id[1].output == b"a"
    assert by_id[2].state is TaskState.Failed
    assert by_id[2].message == "ValueError: boom input"
    assert by_id[3].state is TaskState.Succeed
    assert by_id[3].output == b"c"


@pytest.mark.timeout(60)
def test_on_session_enter_failure_is_a_bind_failure(sm: FakeSessionManager, em: ExecutorManagerProcess) -> None:
    """A service refusing the session gives ExecutorBindFailed(12) and then ExecutorUnbound."""
    sm.register()
    executor_id = new_id()
    bind(sm, executor_id, "s1", probe_app(), common_data=b"refuse")
    failed = of_type(be.ExecutorBindFailed, sm.reports)
    assert failed, sm.reports
    assert failed[0].code == 12
    assert "refusing this session" in failed[0].message
    sm.wait_reports("ExecutorUnbound", lambda rs: of_type(be.ExecutorUnbound, rs))
    wait_for("the instance to exit", lambda: not em.instances())


@pytest.mark.timeout(60)
def test_an_instance_that_dies_mid_task_unbinds_the_executor(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """An instance exiting mid-task: ExecutorUnbound says so plainly; tasks never handed to the
    instance come back as unstarted. Breaks if deaths are missed or tasks are lost."""
    sm.register()
    executor_id = new_id()
    bind(sm, executor_id, "s1", probe_app())
    sm.command(
        be.LaunchTasks(executor_id=executor_id, session_id="s1", tasks=tasks([b"a", b"crash", b"c", b"d", b"e", b"f"]))
    )
    unbound = sm.wait_reports("ExecutorUnbound", lambda rs: of_type(be.ExecutorUnbound, rs))[0]
    assert unbound.session_id == "s1"
    assert "exited with code 3" in unbound.reason
    unstarted = {k.task_id for k in unbound.unstarted}
    finished = {c.task_id for c in completed(sm.reports)}
    assert finished <= {1}
    if finished:
        # The instance held tasks 2 (running) and 3 (at hand); 3 and the rest never ran.
        assert "while running task 2" in unbound.reason
        assert unstarted == {3, 4, 5, 6}
    else:
        # Task 1's result died with the instance (it exits right after sending it): task 1 is
        # blamed (its retry is counted), task 2 comes back unstarted with the rest.
        assert "while running task 1" in unbound.reason
        assert unstarted == {2, 3, 4, 5, 6}
    wait_for("the instance to be gone", lambda: not em.instances())

    # The executor is Idle again and can be bound anew.
    sm.reports.clear()
    sm.command(be.BindExecutor(executor_id=executor_id, session=session("s2"), application=probe_app()))
    sm.wait_reports("ExecutorBound", lambda rs: of_type(be.ExecutorBound, rs))


def blamed_tasks(reason: str) -> set[int]:
    """The task ids an `ExecutorUnbound` reason blames ("while running task 3" or "while
    running one of tasks 3, 7")."""
    ids = reason.rpartition("task ")[2] if "one of" not in reason else reason.rpartition("tasks ")[2]
    return {int(part) for part in ids.split(", ")}


@pytest.mark.timeout(60)
def test_a_death_deep_in_the_window_blames_one_task_then_the_culprit(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """An instance holds many tasks at once (INSTANCE_WINDOW) and batches results. When it dies,
    exactly one task without a result is blamed, every task is accounted for once (completed,
    blamed or unstarted), and when the unstarted ones run again the culprit is blamed at the next
    death, and only it. Breaks if a deep window loses tasks, spares everything, or lets an
    innocent task take the blame again while the culprit goes free."""
    sm.register()
    executor_id = new_id()
    inputs = [b"crash" if i == 20 else f"t{i}".encode() for i in range(1, 41)]
    bind(sm, executor_id, "s1", probe_app())
    sm.command(be.LaunchTasks(executor_id=executor_id, session_id="s1", tasks=tasks(inputs)))
    unbound = sm.wait_reports("ExecutorUnbound", lambda rs: of_type(be.ExecutorUnbound, rs))[0]
    finished = {c.task_id for c in completed(sm.reports)}
    unstarted = {k.task_id for k in unbound.unstarted}
    blamed = blamed_tasks(unbound.reason)
    assert len(blamed) == 1, unbound.reason
    assert max(blamed) <= 20
    assert not (finished & unstarted)
    assert not (blamed & (finished | unstarted))
    assert finished | blamed | unstarted == set(range(1, 41))
    assert all(t < min(blamed) for t in finished)
    wait_for("the instance to be gone", lambda: not em.instances())

    if 20 in blamed:
        return  # every result before the culprit arrived: attributed exactly at once
    # The culprit was spared with the others: run them again; now it is blamed.
    sm.reports.clear()
    bind(sm, executor_id, "s1", probe_app())
    again = [t for t in tasks(inputs) if t.task_id in unstarted]
    sm.command(be.LaunchTasks(executor_id=executor_id, session_id="s1", tasks=again))
    unbound = sm.wait_reports("ExecutorUnbound", lambda rs: of_type(be.ExecutorUnbound, rs))[0]
    # Suspects run one at a time (SUSPECT_WINDOW): exactly the culprit is blamed.
    assert blamed_tasks(unbound.reason) == {20}, unbound.reason
    finished = {c.task_id for c in completed(sm.reports)}
    assert finished == {t for t in unstarted if t < 20}
    wait_for("the instance to be gone", lambda: not em.instances())


@pytest.mark.timeout(60)
def test_sigkill_of_the_executor_manager_kills_its_instances(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """PDEATHSIG: an executor manager killed with SIGKILL leaves no instance behind."""
    sm.register()
    executor_ids = [new_id(), new_id()]
    for executor_id in executor_ids:
        bind(sm, executor_id, "s1", probe_app())
        sm.reports.clear()
    # One instance busy in a task, one idle: both must go.
    sm.command(be.LaunchTasks(executor_id=executor_ids[0], session_id="s1", tasks=tasks([b"hang"])))
    wait_for("two instances", lambda: len(em.instances()) == 2)
    em.stop(signal.SIGKILL)
    wait_for("every instance to die with its executor manager", lambda: not em.instances())


@pytest.mark.timeout(60)
def test_reregisters_with_its_executors_and_resends_unacked_completions(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """After Error(Reregister) the executor manager registers again naming its executors, and
    resends completions the session manager never acknowledged for tasks it still lists."""
    sm.register()
    executor_id = new_id()
    bind(sm, executor_id, "s1", probe_app())
    sm.command(be.LaunchTasks(executor_id=executor_id, session_id="s1", tasks=tasks([b"a"])))
    sm.wait_reports("a completion", completed)
    sm.reports.clear()
    sm.send(be.Error(code=ErrorCode.Reregister, message="test"))
    snapshot = [bound_probe(executor_id, tasks([b"a"]) + tasks([b"b"], first=2))]
    register = sm.register(snapshot)
    assert register.executors == [executor_id]
    done = sm.wait_reports("2 completions", lambda rs: len(completed(rs)) >= 2 and completed(rs))
    assert sorted(c.task_id for c in done) == [1, 2]
    assert em.instances()


@pytest.mark.timeout(60)
def test_queued_registrations_answered_at_once_run_no_task_twice(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """A session manager back from a pause answers every RegisterNode that queued up while it
    was away, each with a newer epoch and a snapshot that still lists the task whose result
    the executor manager holds. Breaks if that task is launched again (the result waiting to be
    resent must count as known) or if the node settles on any epoch but the last."""
    sm.register()
    executor_id = new_id()
    bind(sm, executor_id, "s1", probe_app())
    sm.command(be.LaunchTasks(executor_id=executor_id, session_id="s1", tasks=tasks([b"a"])))
    sm.wait_reports("a completion", completed)  # never acknowledged: kept for resending
    sm.reports.clear()
    sm.send(be.Error(code=ErrorCode.Reregister, message="test"))
    wait_for("a RegisterNode", lambda: sm.recv(0.1).__class__ is be.RegisterNode)
    snapshot = [bound_probe(executor_id, tasks([b"a"]))]
    for _ in range(3):  # the answers to three queued registrations, back to back
        sm.epoch += 1
        sm.send(be.Registered(epoch=sm.epoch, executors=snapshot, heartbeat_interval=0.2, heartbeat_liveness=40))
    # Whether the three answers arrive in one read or several, the held result is resent under
    # each epoch the node acts on; a second run would add a completion under the last one.
    finals: list[int] = []
    last_epoch = 0
    deadline = time.monotonic() + 3.0  # a second run of an echo task would report well within this
    while time.monotonic() < deadline:
        message = sm.recv(0.05)
        if isinstance(message, be.Reports) and message.epoch == sm.epoch:
            finals.extend(c.task_id for c in completed(message.reports))
        if isinstance(message, be.Heartbeat | be.Reports):
            last_epoch = message.epoch
    assert finals == [1]
    assert last_epoch == sm.epoch


@pytest.mark.timeout(60)
def test_bad_frames_are_dropped(sm: FakeSessionManager, em: ExecutorManagerProcess) -> None:
    """Garbage from the session manager is logged and dropped; the link goes on."""
    sm.register()
    sm.sock.send_multipart([sm.peer, b"FLM\x01", b"\xc1garbage"])
    sm.sock.send_multipart([sm.peer, b"nonsense"])
    executor_id = new_id()
    sm.command(be.CreateExecutor(executor_id=executor_id, resreq=RESREQ))
    sm.wait_reports("ExecutorCreated", lambda rs: of_type(be.ExecutorCreated, rs))
    assert em.process.poll() is None


@pytest.mark.timeout(60)
def test_an_executor_missing_from_the_snapshot_is_killed_silently(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """At re-registration, executors the snapshot leaves out are released on the node and
    their instances killed (I5), without reports about them."""
    sm.register()
    executor_id = new_id()
    bind(sm, executor_id, "s1", probe_app())
    sm.reports.clear()
    sm.send(be.Error(code=ErrorCode.Reregister, message="test"))
    assert sm.register([]).executors == [executor_id]
    wait_for("the orphan instance to be killed", lambda: not em.instances())
    sm.command(be.CreateExecutor(executor_id="probe", resreq=RESREQ))
    sm.wait_reports("ExecutorCreated", lambda rs: of_type(be.ExecutorCreated, rs))
    assert [r.executor_id for r in sm.reports] == ["probe"]


@pytest.mark.timeout(60)
def test_a_silent_session_manager_is_left_but_instances_keep_running(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """Silence for interval * liveness: the executor manager registers again (with its
    executors) and keeps its instances running."""
    sm.register()
    executor_id = new_id()
    bind(sm, executor_id, "s1", probe_app())
    pid = em.instances()
    sm.command(be.LaunchTasks(executor_id=executor_id, session_id="s1", tasks=tasks([b"a"])))
    sm.wait_reports("a completion", completed)
    # Re-register with a short liveness, then say nothing: the executor manager must notice.
    sm.other.clear()
    sm.send(be.Error(code=ErrorCode.Reregister, message="test"))
    snapshot = [bound_probe(executor_id, [])]
    message = sm.wait_message(be.RegisterNode)
    sm.other.clear()
    sm.epoch += 1
    sm.seq = 0
    sm.send(be.Registered(epoch=sm.epoch, executors=snapshot, heartbeat_interval=0.2, heartbeat_liveness=3))
    assert message.executors == [executor_id]
    again = sm.wait_message(be.RegisterNode, timeout=20)
    assert again.executors == [executor_id]
    assert em.instances() == pid


@pytest.mark.timeout(60)
def test_refused_as_a_duplicate_it_kills_the_instances_it_no_longer_owns(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """Another executor manager took our node name while we were silent: the session manager
    cleaned up what we held, so our instances are orphans and are killed (I5, R10); we keep
    asking for the name with backoff, holding nothing."""
    sm.register()
    executor_id = new_id()
    bind(sm, executor_id, "s1", probe_app())
    assert em.instances()
    sm.other.clear()
    sm.send(be.Error(code=ErrorCode.Reregister, message="test"))
    first = sm.wait_message(be.RegisterNode)
    assert first.executors == [executor_id]
    sm.other.clear()
    sm.send(be.Error(code=ErrorCode.DuplicateNode, message="node name 'n1' is held by a live executor manager"))
    wait_for("the orphan instance to be killed", lambda: not em.instances())
    again = sm.wait_message(be.RegisterNode)
    assert again.executors == []
    assert again.incarnation == first.incarnation
