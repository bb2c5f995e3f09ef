"""Issue 14, finding 2: a tenant's instance must not take its executor manager down, nor speak
for another tenant's instance, nor make its node start and kill it forever.

A real executor manager runs against a fake session manager (tests/em/conftest.py), or against a
real one (tests/integration/daemons.py), and its instances run tests/security/services/
misbehaving.py, which attacks the instance socket with a DEALER of its own, as tenant code can.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from protocol import backend as be
from protocol.types import TaskState
from tests.em.contexts import bind, completed, new_id, of_type, probe_app, tasks
from tests.support.daemons import Daemons, ExecutorManagerProcess
from tests.support.fake_backend import FakeSessionManager
from tests.support.waiting import wait_for

SERVICE = Path(__file__).parent / "services" / "misbehaving.py"


def misbehaving_app(at_start: str = "behave") -> be.ApplicationContext:
    return be.ApplicationContext(name="misbehaving", command="${FLAME_PYTHON}", arguments=[str(SERVICE), at_start])


def unbound_report(sm: FakeSessionManager, executor_id: str) -> be.ExecutorUnbound:
    found = sm.wait_reports(
        f"ExecutorUnbound of {executor_id}",
        lambda rs: [r for r in rs if isinstance(r, be.ExecutorUnbound) and r.executor_id == executor_id],
        timeout=30,
    )
    return found[0]  # type: ignore[no-any-return]  # wait_reports returns Any (see FakeSessionManager)


def run_one(sm: FakeSessionManager, executor_id: str, session_id: str, task_id: int) -> be.TaskCompleted:
    """A task on a well-behaved probe instance: the node still serves."""
    sm.command(be.LaunchTasks(executor_id=executor_id, session_id=session_id, tasks=tasks([b"ok"], first=task_id)))
    mine = f"task {task_id} on {executor_id}"
    done = sm.wait_reports(mine, lambda rs: [c for c in of_executor(rs, executor_id) if c.task_id == task_id])
    return done[0]  # type: ignore[no-any-return]  # wait_reports returns Any (see FakeSessionManager)


def of_executor(reports: list[be.ExecutorReport], executor_id: str) -> list[be.TaskCompleted]:
    return [c for c in completed(reports) if c.executor_id == executor_id]


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_deep_frame_from_a_starting_instance_fails_its_bind_and_the_node_lives(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """The finding: an instance's frame nested 5,000 levels deep killed the executor manager
    (and every other instance with it). Now the instance is killed, its bind fails with what
    it did (code 19), and the node goes on serving another session."""
    sm.register()
    bad, good = new_id(), new_id()
    bind(sm, bad, "s-bad", misbehaving_app("deep-at-start"))
    failed = of_type(be.ExecutorBindFailed, sm.reports)
    assert len(failed) == 1, sm.reports
    assert failed[0].code == 19
    assert "does not decode" in failed[0].message
    assert "nested deeper than" in failed[0].message
    unbound_report(sm, bad)
    wait_for("the bad instance to be gone", lambda: not em.instances())
    sm.reports.clear()
    bind(sm, good, "s-good", probe_app())
    assert run_one(sm, good, "s-good", 1).output == b"ok"
    assert em.process.poll() is None


@pytest.mark.integration
@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        (b"deep", "nested deeper than"),
        (b"garbage:20000", "does not decode"),
        (b"results:20000", "a result for task 1000000 (attempt 1) it does not hold"),
    ],
)
def test_an_instance_that_floods_or_sends_garbage_is_killed_and_its_task_fails(
    sm: FakeSessionManager, em: ExecutorManagerProcess, attack: bytes, reason: str
) -> None:
    """A bound instance sends a deep frame, 20,000 frames of garbage, or 20,000 results for
    tasks it was never given: it is killed, the task it was running fails with what it did, its
    other task comes back unstarted, and another tenant's instance, busy meanwhile, finishes its
    tasks with the right outputs. Today garbage is dropped and the instance keeps its tasks (a
    deep frame kills the node)."""
    sm.register()
    victim, attacker = new_id(), new_id()
    bind(sm, victim, "s-victim", misbehaving_app())
    bind(sm, attacker, "s-attacker", misbehaving_app())
    sm.reports.clear()
    sm.command(be.LaunchTasks(executor_id=victim, session_id="s-victim", tasks=tasks([b"sleep:1.5", b"after"])))
    sm.command(be.LaunchTasks(executor_id=attacker, session_id="s-attacker", tasks=tasks([attack, b"next"])))
    unbound = unbound_report(sm, attacker)
    assert reason in unbound.reason, unbound
    assert [k.task_id for k in unbound.unstarted] == [2]
    failure = of_executor(sm.reports, attacker)
    assert [(c.task_id, c.state) for c in failure] == [(1, TaskState.Failed)]
    assert failure[0].message is not None
    assert reason in failure[0].message
    assert "killed" in failure[0].message
    done = sm.wait_reports("the victim's tasks", lambda rs: len(of_executor(rs, victim)) == 2 and rs)
    outputs = [(c.task_id, c.output) for c in of_executor(done, victim)]
    assert outputs == [(1, b"slept"), (2, b"after")]
    assert em.process.poll() is None


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_an_instance_cannot_speak_for_another_executor(sm: FakeSessionManager, em: ExecutorManagerProcess) -> None:
    """An instance that learned another executor's id connects with it as routing id and sends
    results for that executor's running task with output FORGED. Today they are recorded (and
    ROUTER_HANDOVER hands it the victim's tasks too). Now nothing it sends counts: the victim's
    task ends with its own output, and the impostor (whose process the kernel names) is killed
    with the reason."""
    sm.register()
    victim, impostor = new_id(), new_id()
    bind(sm, victim, "s-victim", misbehaving_app())
    bind(sm, impostor, "s-impostor", misbehaving_app())
    sm.reports.clear()
    sm.command(be.LaunchTasks(executor_id=victim, session_id="s-victim", tasks=tasks([b"sleep:3"])))
    forge = f"forge:{victim}:1".encode()
    sm.command(be.LaunchTasks(executor_id=impostor, session_id="s-impostor", tasks=tasks([forge])))
    unbound = unbound_report(sm, impostor)
    assert "routing id" in unbound.reason, unbound
    assert "not its own" in unbound.reason, unbound
    done = sm.wait_reports("the victim's task", lambda rs: of_executor(rs, victim))
    assert [(c.task_id, c.output) for c in done] == [(1, b"slept")]
    assert not [c for c in completed(sm.reports) if c.output == b"FORGED"]
    sm.command(be.LaunchTasks(executor_id=victim, session_id="s-victim", tasks=tasks([b"still mine"], first=2)))
    again = sm.wait_reports("the victim's next task", lambda rs: [c for c in completed(rs) if c.task_id == 2])
    assert again[0].executor_id == victim
    assert again[0].output == b"still mine"
    assert em.process.poll() is None


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_session_whose_instances_keep_misbehaving_is_no_longer_bound_on_the_node(
    sm: FakeSessionManager, em: ExecutorManagerProcess
) -> None:
    """The crash loop on one node: a session whose instance sends a bad frame at every start.
    After 3 kills its binds on this node fail at once, without starting an instance, with a
    reason that says why; other sessions still bind."""
    sm.register()
    executor_id = new_id()
    for attempt in range(3):
        sm.reports.clear()
        bind(sm, executor_id, "s-bad", misbehaving_app("deep-at-start"))
        failed = of_type(be.ExecutorBindFailed, sm.reports)
        assert "does not decode" in failed[0].message, (attempt, failed)
        unbound_report(sm, executor_id)
        wait_for("the bad instance to be gone", lambda: not em.instances())
    sm.reports.clear()
    bind(sm, executor_id, "s-bad", misbehaving_app("deep-at-start"))
    refused = of_type(be.ExecutorBindFailed, sm.reports)
    assert refused[0].code == 19
    assert "killed for misbehaving 3 times on this node" in refused[0].message
    assert "not bound here again" in refused[0].message
    assert not em.instances()
    sm.reports.clear()
    bind(sm, executor_id, "s-good", probe_app())
    assert run_one(sm, executor_id, "s-good", 1).output == b"ok"
    assert em.process.poll() is None


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_the_crash_loop_ends_with_bind_failures_recorded_and_the_node_up(daemons: Daemons) -> None:
    """The finding end to end: a session whose instance sends a bad frame at every start used to
    kill the executor manager, whose restart bound it again and died again. Now the executor
    manager stays up (same process), the session records its bind failures until the session
    manager's retry limit pauses it (its task fails with what the instance did), and the node
    still runs another session's task."""
    daemons.start_session_manager()
    node = daemons.start_executor_manager("n1", 2)
    daemons.wait_ready_nodes(1)
    with daemons.client() as client:
        spec = {"command": sys.executable, "arguments": [str(SERVICE), "deep-at-start"]}
        assert client.call({"type": "RegisterApplication", "name": "crashloop", "spec": spec})["type"] != "Error"
        created = client.call({"type": "CreateSession", "session_id": "loop", "spec": {"application": "crashloop"}})
        assert created["type"] == "SessionReply", created
        assert client.call({"type": "CreateTasks", "session_id": "loop", "inputs": [b"x"]})["type"] == "TasksCreated"

        def paused() -> list[dict[str, object]] | None:
            events = client.call({"type": "GetSession", "session_id": "loop"})["session"].get("events", [])
            return events if any("retry limit reached" in str(e.get("message")) for e in events) else None

        events = wait_for("the session's bind retry limit", paused, timeout=90)
        failures = [e for e in events if "failed to bind" in str(e.get("message"))]
        assert len(failures) >= 5, events
        assert any("does not decode" in str(e["message"]) for e in failures), failures
        task = client.call({"type": "GetTask", "session_id": "loop", "task_id": 1})["task"]
        assert task["state"] == "Failed", task
        assert "does not decode" in task.get("message", ""), task
        assert node.poll() is None, daemons.log("n1")[-3000:]
        assert [n["state"] for n in client.call({"type": "ListNodes"})["nodes"]] == ["Ready"]
        created = client.call({"type": "CreateSession", "session_id": "fine", "spec": {"application": "flmping"}})
        assert created["type"] == "SessionReply", created
        created = client.call({"type": "CreateTasks", "session_id": "fine", "inputs": [b"hello"]})
        assert created["type"] == "TasksCreated", created

        def finished() -> dict[str, object] | None:
            task = client.call({"type": "GetTask", "session_id": "fine", "task_id": 1})["task"]
            return task if task["state"] in ("Succeed", "Failed") else None

        assert wait_for("flmping's task", finished, timeout=60)["state"] == "Succeed"
    assert node.poll() is None
