"""The executor manager's core with its link under a fake clock (issue 16): a freeze longer
than the drain, a resume just before it, a session-manager restart and the re-registration
that follows. Pure, no process or socket: milliseconds each."""

from __future__ import annotations

import pytest

from flamed.executor_manager import effects as fx
from flamed.executor_manager.link import BackendLink, ConnectAction
from flamed.executor_manager.machines import Phase
from protocol import backend as be
from protocol.types import ExecutorState
from tests.em.contexts import RESREQ, completed, flmping_app, session, tasks
from tests.em.core_harness import FakeShell

pytestmark = pytest.mark.timeout(10)

#: heartbeat 0.5 s x 4: the session manager writes the node off 2 s after it fell silent, and
#: gives up on it (drain) 3 s later
INTERVAL, LIVENESS, DRAIN = 0.5, 4, 3.0


def registration(epoch: int, *assignments: be.ExecutorAssignment) -> be.Registered:
    return be.Registered(
        epoch=epoch, executors=list(assignments), heartbeat_interval=INTERVAL, heartbeat_liveness=LIVENESS
    )


def bound(executor_id: str, session_id: str, task_ids: list[int]) -> be.ExecutorAssignment:
    """The snapshot's row for an executor bound to `session_id` holding `task_ids`."""
    return be.ExecutorAssignment(
        executor_id=executor_id,
        state=ExecutorState.Bound.value,
        resreq=RESREQ,
        session=session(session_id),
        application=flmping_app(),
        tasks=[t for t in tasks([b"x"] * 8) if t.task_id in task_ids],
    )


def node() -> FakeShell:
    """A node registered at 0 (epoch 1) with e1 bound to s1, tasks 1-4 launched (1 and 2 on
    the instance: the window of tasks of unknown pace)."""
    link = BackendLink(0.2, 1.0, INTERVAL, LIVENESS)
    shell = FakeShell(link)
    shell.registered(registration(1))
    shell.bind("e1", "s1", tasks([b"x"] * 4))
    assert shell.invoked() == [1, 2]
    shell.take_reports()
    return shell


def flush_while_cut_off(shell: FakeShell) -> None:
    """What the manager does at the end of a turn with the link not confirmed: the completions
    are kept to be resent, nothing goes out."""
    assert shell.link is not None
    assert not shell.link.registered
    shell.link.keep(0, completed(shell.take_reports()))


def test_a_freeze_longer_than_the_drain_hands_no_task_to_an_instance_until_confirmed() -> None:
    """Hole 2. Breaks if a node resumed after the session manager gave up on it feeds its
    instances the tasks it still queues before the session manager has confirmed it again: the
    session manager put them back to Pending, so they would run twice."""
    shell = node()
    link = shell.link
    assert link is not None
    link.turn_ended(0.1)
    shell.advance(0.1 + 2 + DRAIN + 0.5)  # SIGSTOP at 0.1; SIGCONT after detection + drain
    shell.results("e1", 1)  # the first thing read on resuming: the instance finished task 1
    assert shell.invoked() == [], "a task started on a link the session manager wrote off"
    why = link.suspicion(shell.now)
    assert why is not None
    assert "stood still" in why
    link.lost()  # the manager's tick: register again
    flush_while_cut_off(shell)
    shell.results("e1", 2)
    flush_while_cut_off(shell)
    assert shell.invoked() == []
    # The session manager gave tasks 1-2 up (retried elsewhere) and still wants 3 and 4 here.
    shell.registered(registration(2, bound("e1", "s1", [3, 4])))
    assert shell.invoked() == [3], "once confirmed, the tasks it still wants start (long: one at a time)"
    assert completed(shell.reports) == [], "completions of tasks given up are not resent"
    shell.results("e1", 3)
    assert shell.invoked() == [4]
    assert shell.signals == []


def test_a_freeze_the_session_manager_wrote_off_stops_the_instance_without_starting_anything() -> None:
    """Hole 2, the node no longer listed. Breaks if a resumed node starts queued work for an
    executor the session manager no longer gives it, or keeps that instance running."""
    shell = node()
    assert shell.link is not None
    shell.link.turn_ended(0.1)
    shell.advance(10.0)
    shell.results("e1", 1)
    shell.link.lost()
    flush_while_cut_off(shell)
    shell.registered(registration(2))
    assert shell.invoked() == []
    assert shell.signals == [("e1", fx.Sig.TERM)]
    shell.exit("e1")
    assert "e1" not in shell.core.executors
    assert shell.reports == [], "a discarded executor goes quietly"


def test_a_resume_just_before_the_drain_expires_keeps_the_node_and_its_results() -> None:
    """Hole 3. Breaks if a node resumed just before its drain expired waits on its backoff
    instead of registering on its live connection, or if the re-registration loses what it
    finished meanwhile or disturbs its running instance."""
    shell = node()
    link = shell.link
    assert link is not None
    link.turn_ended(0.1)
    shell.advance(0.1 + 2 + DRAIN - 0.115)
    shell.results("e1", 1)  # finished during the freeze, read on resuming
    assert shell.invoked() == []
    link.lost()
    flush_while_cut_off(shell)
    # The new connection is up at once: register on it now, not after a backoff.
    assert link.connection_up(ups_before=0, unanswered=False) is ConnectAction.register
    shell.advance(shell.now + 0.01)
    shell.registered(registration(2, bound("e1", "s1", [1, 2, 3, 4])))
    assert [(c.task_id, c.attempt) for c in completed(shell.reports)] == [(1, 1)], "the result is resent"
    assert shell.invoked() == [], "task 1 is not queued again; task 2 still runs"
    shell.results("e1", 2)
    assert shell.invoked() == [3]
    assert shell.signals == []
    assert len(shell.starts) == 1, "the running instance is kept"
    assert shell.core.executors["e1"].phase is Phase.Bound


def test_a_session_manager_restart_keeps_running_instances_and_resends_kept_completions() -> None:
    """Breaks if a re-registration after a session-manager restart stops instances it still
    lists, loses completions sent to the old one and not acknowledged, or runs again a task
    whose result is being resent."""
    shell = node()
    link = shell.link
    assert link is not None
    shell.advance(0.3)
    shell.results("e1", 1)
    seq = link.next_seq(shell.now)  # sent in a Reports the old session manager never acknowledged
    link.keep(seq, completed(shell.take_reports()))
    assert shell.invoked() == [], "long tasks: the next waits for task 2"
    # It dies; ZeroMQ makes the connection again to the new one: register again at once.
    assert link.connection_up(ups_before=1, unanswered=False) is ConnectAction.rejoin
    link.lost()
    shell.advance(1.0)
    shell.results("e1", 2)
    flush_while_cut_off(shell)
    assert shell.invoked() == [], "no task starts while the link is not confirmed"
    shell.registered(registration(7, bound("e1", "s1", [1, 2, 3, 4, 5])))
    assert sorted(c.task_id for c in completed(shell.reports)) == [1, 2]
    assert shell.invoked() == [3], "1 and 2 are done and not queued again"
    assert shell.core.executors["e1"].task_keys() == {(3, 1), (4, 1), (5, 1)}
    assert shell.signals == []
    assert len(shell.starts) == 1
