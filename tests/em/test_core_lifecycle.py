"""The executor manager's core under a fake clock: an instance's exit in each phase, the bind
timeout, the stop (leave, TERM, KILL), a misbehaving instance, a recall and the SIGTERM drain.
Pure, no process or socket: what the real-process tests of tests/em show end to end, here as
the decisions alone, in milliseconds."""

from __future__ import annotations

import pytest

from flamed.executor_manager import effects as fx
from flamed.executor_manager.conduct import MISBEHAVIOUR_LIMIT
from flamed.executor_manager.drain import Drain
from flamed.executor_manager.holding import BIND_FAILED_MISBEHAVED, BIND_TIMEOUT
from flamed.executor_manager.machines import Phase
from protocol import backend as be
from protocol import instance as im
from protocol.types import TaskState
from tests.em.contexts import RESREQ, completed, flmping_app, of_type, session, tasks
from tests.em.core_harness import STOP_TIMEOUT, FakeShell

pytestmark = pytest.mark.timeout(10)


def unstarted(report: be.ExecutorUnbound) -> list[int]:
    return [k.task_id for k in report.unstarted]


def bound_node(count: int = 4) -> FakeShell:
    """e1 bound to s1 with tasks 1..count launched (1 and 2 on the instance)."""
    shell = FakeShell()
    shell.bind("e1", "s1", tasks([b"x"] * count))
    assert shell.invoked() == [1, 2][:count]
    shell.take_reports()
    return shell


def test_an_exit_while_binding_fails_the_bind() -> None:
    """Breaks if an instance that dies before entering the session leaves its executor Binding
    or is not reported as a failed bind (the session manager would wait for it forever)."""
    shell = FakeShell()
    shell.command(be.CreateExecutor(executor_id="e1", resreq=RESREQ))
    shell.command(be.BindExecutor(executor_id="e1", session=session("s1"), application=flmping_app()))
    shell.take_reports()
    shell.exit("e1", "instance (pid 1001) exited with code 3")
    failed, unbound = shell.take_reports()
    assert isinstance(failed, be.ExecutorBindFailed)
    assert failed.code == 11
    assert "exited with code 3 before it entered the session" in failed.message
    assert isinstance(unbound, be.ExecutorUnbound)
    assert shell.core.executors["e1"].phase is Phase.Idle
    assert shell.timers == {}, "the bind timer goes with the instance"


def test_an_exit_while_bound_blames_the_running_task_and_hands_back_the_rest() -> None:
    """Breaks if the death of a bound instance counts a retry for tasks it never started, or
    returns the one it was running as unstarted (a task that kills its instance would loop)."""
    shell = bound_node()
    shell.exit("e1", "instance (pid 1001) was killed by signal SIGSEGV")
    (unbound,) = of_type(be.ExecutorUnbound, shell.take_reports())
    assert unstarted(unbound) == [2, 3, 4]
    assert unbound.reason == "instance (pid 1001) was killed by signal SIGSEGV while running task 1"
    assert ("s1", 2) in shell.core.suspects
    assert shell.core.executors["e1"].phase is Phase.Idle


def test_an_unbind_leaves_then_terms_then_kills_and_reports_on_exit() -> None:
    """Breaks if a graceful unbind skips LeaveSession, does not escalate to TERM and KILL after
    the stop timeout, or reports the executor unbound before its instance is gone."""
    shell = bound_node()
    shell.command(be.UnbindExecutor(executor_id="e1"))
    assert shell.sent[-1] == ("e1", im.LeaveSession())
    assert shell.core.executors["e1"].phase is Phase.Unbinding
    assert shell.take_reports() == []
    shell.advance(STOP_TIMEOUT)
    assert shell.signals == [("e1", fx.Sig.TERM)]
    shell.advance(2 * STOP_TIMEOUT)
    assert shell.signals == [("e1", fx.Sig.TERM), ("e1", fx.Sig.KILL)]
    shell.exit("e1")
    (unbound,) = shell.take_reports()
    assert isinstance(unbound, be.ExecutorUnbound)
    assert unbound.reason == "unbound by the session manager"
    assert unstarted(unbound) == [3, 4]


def test_an_exit_while_unbinding_cancels_the_escalation() -> None:
    """Breaks if a timer of an instance that is gone fires on the executor's next instance."""
    shell = bound_node()
    shell.command(be.UnbindExecutor(executor_id="e1"))
    shell.exit("e1")
    assert shell.timers == {}
    shell.take_reports()
    shell.command(be.BindExecutor(executor_id="e1", session=session("s2"), application=flmping_app()))
    shell.advance(STOP_TIMEOUT * 3)
    assert shell.signals == [], "the old instance's TERM/KILL timers fired on the new one"


@pytest.mark.parametrize(("ready", "code", "what"), [(False, 11, "say InstanceReady"), (True, 12, "enter the session")])
def test_a_bind_that_times_out_fails_and_stops_the_instance(ready: bool, code: int, what: str) -> None:
    """Breaks if an instance that never says InstanceReady (or never enters the session) keeps
    its executor Binding past BIND_TIMEOUT, or fails with the wrong code."""
    shell = FakeShell()
    shell.command(be.BindExecutor(executor_id="e1", session=session("s1"), application=flmping_app()))
    if ready:
        shell.say("e1", im.InstanceReady(executor_id="e1", protocol_version=1, pid=shell.pids["e1"]))
    shell.advance(BIND_TIMEOUT - 0.01)
    assert shell.signals == []
    shell.advance(BIND_TIMEOUT)
    (failed,) = shell.take_reports()
    assert isinstance(failed, be.ExecutorBindFailed)
    assert (failed.code, f"did not {what} within 60s" in failed.message) == (code, True)
    assert shell.signals == [("e1", fx.Sig.TERM)]
    shell.exit("e1")
    assert isinstance(shell.take_reports()[-1], be.ExecutorUnbound)


def test_a_misbehaving_instance_is_killed_its_task_failed_and_its_session_refused_after_the_limit() -> None:
    """Breaks if an instance that sends a result for a task it does not hold is not killed at
    once (no grace), its running task not failed with what it did, or a session whose instances
    keep misbehaving is bound again and again."""
    shell = bound_node()
    shell.results("e1", 9)
    assert shell.signals[:1] == [("e1", fx.Sig.KILL)]
    assert shell.disowned == ["e1"]
    (failure,) = completed(shell.take_reports())
    assert (failure.task_id, failure.state) == (1, TaskState.Failed)
    assert failure.message is not None
    assert "result for task 9 (attempt 1) it does not hold" in failure.message
    shell.exit("e1")
    (unbound,) = of_type(be.ExecutorUnbound, shell.take_reports())
    assert unstarted(unbound) == [2, 3, 4]
    for _ in range(MISBEHAVIOUR_LIMIT - 1):
        shell.command(be.BindExecutor(executor_id="e1", session=session("s1"), application=flmping_app()))
        shell.say("e1", im.SessionEntered(ok=True))  # before InstanceReady: misbehaviour
        shell.exit("e1")
    shell.take_reports()
    starts = len(shell.starts)
    shell.command(be.BindExecutor(executor_id="e1", session=session("s1"), application=flmping_app()))
    failed, _ = shell.take_reports()
    assert isinstance(failed, be.ExecutorBindFailed)
    assert failed.code == BIND_FAILED_MISBEHAVED
    assert len(shell.starts) == starts, "no instance started for a refused session"


def test_a_recall_hands_back_the_last_queued_tasks_never_the_ones_on_the_instance() -> None:
    """Breaks if a recall takes a task its instance already holds (it would run twice) or takes
    the next tasks to run instead of the last queued."""
    shell = bound_node(count=6)
    shell.command(be.RecallTasks(executor_id="e1", session_id="s1", count=10))
    (returned,) = shell.take_reports()
    assert isinstance(returned, be.TasksReturned)
    assert [k.task_id for k in returned.unstarted] == [6, 5, 4, 3]
    assert shell.core.executors["e1"].task_keys() == {(1, 1), (2, 1)}


def test_an_instance_that_closed_its_socket_is_stopped_after_the_stop_timeout() -> None:
    """Breaks if a send the instance socket refuses leaves a stuck instance bound forever."""
    shell = bound_node()
    shell.unreachable.add("e1")
    shell.results("e1", 1)  # the top-up is refused
    shell.advance(shell.now + STOP_TIMEOUT)
    assert shell.signals == [("e1", fx.Sig.TERM)]
    assert shell.core.executors["e1"].phase is Phase.Unbinding


def test_a_sigterm_drain_finishes_running_tasks_refuses_binds_then_stops() -> None:
    """Breaks if a draining node starts queued tasks, accepts a bind, unbinds before its
    instance finished what it holds, loses the held-back queue, or says it may stop while an
    instance is still there."""
    shell = bound_node()
    shell.command(be.BindExecutor(executor_id="e2", session=session("s2"), application=flmping_app()))
    shell.take_reports()
    drain = Drain(shell.core, "n1", grace=30.0, now=shell.now)
    assert not drain.step(shell.now)
    shell.run(shell.core.take_effects())
    assert shell.signals == [("e2", fx.Sig.TERM)], "a binding executor is unbound at once"
    kept = drain.refuse_binds(
        [
            be.BindExecutor(executor_id="e3", session=session("s3"), application=flmping_app()),
            be.LaunchTasks(executor_id="e3", session_id="s3", tasks=tasks([b"y"], first=20)),
            be.RecallTasks(executor_id="e1", session_id="s1", count=1),
        ]
    )
    shell.run(shell.core.take_effects())
    (refused,) = shell.take_reports()
    assert isinstance(refused, be.ExecutorUnbound)
    assert (refused.executor_id, unstarted(refused), refused.reason) == ("e3", [20], "node is stopping")
    assert [type(c) for c in kept] == [be.RecallTasks]
    shell.results("e1", 1, 2)
    assert shell.invoked() == [], "no queued task starts while draining"
    assert not drain.step(shell.now)
    shell.run(shell.core.take_effects())
    assert ("e1", im.LeaveSession()) in shell.sent
    shell.exit("e1")
    shell.exit("e2")
    unbound = {r.executor_id: r for r in of_type(be.ExecutorUnbound, shell.take_reports())}
    assert unstarted(unbound["e1"]) == [3, 4]
    assert drain.step(shell.now), "all idle: stop now"
