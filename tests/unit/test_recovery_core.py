"""Recovery through the pure controller: counters, fencing of stale completions, cleanup and
the retry limit, and a scheduler regression found by the stateful test."""

from __future__ import annotations

import pytest

from flamed.core import scheduler
from flamed.core.controller import Controller
from flamed.core.links import RECOVERY_COUNTERS
from protocol import backend as be
from protocol import frontend as fe
from protocol.types import ApplicationSpec, ExecutorState, NodeState, ResourceRequirement, TaskState
from tests.unit.core_harness import Harness

pytestmark = pytest.mark.timeout(30)


def cluster(nodes: int = 1, slots: int = 2, **config: object) -> Harness:
    config = {"heartbeat_interval": 1.0, "heartbeat_liveness": 3, "drain_timeout": 5.0, **config}
    h = Harness(**config)
    h.request(fe.RegisterApplication(name="flmping", spec=ApplicationSpec(command="true")))
    for i in range(nodes):
        h.add_node(f"n{i + 1}", slots, auto_run=False)
    h.session("s1")
    return h


def test_every_recovery_counter_is_in_the_stats_from_the_start() -> None:
    """Breaks if a recovery counter appears in the stats only once it first moves (dashboards need it at 0)."""
    stats = Harness().ctl.stats()
    for name in RECOVERY_COUNTERS:
        assert stats[f"{name}_total"] == 0.0, name


def test_completion_naming_another_attempt_or_executor_is_rejected_and_counted() -> None:
    """Breaks if a completion naming another attempt or an unknown executor, or a repeated one, changes the
    task instead of being rejected and counted."""
    h = cluster()
    (task_id,) = h.tasks("s1", [b"x"])
    node = next(iter(h.nodes.values()))
    (executor_id,) = [e for e, q in node.queued.items() if q]
    for executor, attempt in ((executor_id, 7), ("nope", 1)):
        node.outbox.append(
            be.TaskCompleted(
                executor_id=executor, session_id="s1", task_id=task_id, attempt=attempt, state=TaskState.Succeed
            )
        )
        h.pump()
    assert h.ctl.counters["stale_completions_rejected"] == 2
    assert h.state.sessions["s1"].tasks[0].state is TaskState.Running
    node.run_tasks()
    h.pump()
    task = h.state.sessions["s1"].tasks[0]
    assert (task.state, task.attempt) == (TaskState.Succeed, 1)
    # The same completion again (a resend after an ack was lost) is not recorded twice.
    node.outbox.append(
        be.TaskCompleted(executor_id=executor_id, session_id="s1", task_id=task_id, attempt=1, state=TaskState.Failed)
    )
    h.pump()
    assert h.task_state("s1", task_id) is TaskState.Succeed
    assert h.ctl.counters["stale_completions_rejected"] == 3


def test_cleanup_retries_then_fails_at_the_limit_with_the_counters_moving() -> None:
    """Breaks if a lost node's task is not retried on another node, is retried past task_retry_limit, or the
    recovery counters do not move."""
    h = cluster(task_retry_limit=1)
    (task_id,) = h.tasks("s1", [b"x"])
    for round_ in range(2):
        node = next(n for n in h.nodes.values() if n.online)
        node.online = False
        h.advance(3.5)  # silent: Unknown
        assert h.state.nodes[node.name].state is NodeState.Unknown
        h.advance(5.0)  # drain expired: NotReady, task retried or failed
        assert h.state.nodes[node.name].state is NodeState.NotReady
        assert not [e for e in h.state.executors.values() if e.node == node.name]
        if round_ == 0:
            h.add_node(f"m{round_}", 2, auto_run=False)
            h.advance(0.5)
            assert h.state.sessions["s1"].tasks[0].state is TaskState.Running
    task = h.state.sessions["s1"].tasks[task_id - 1]
    assert task.state is TaskState.Failed
    assert task.retry_count == 1
    assert task.message is not None
    assert "retry limit" in task.message
    counters = h.ctl.counters
    assert (counters["node_cleanups"], counters["nodes_silent"]) == (2, 2)
    assert (counters["tasks_retried"], counters["tasks_failed_retry_limit"]) == (1, 1)


def test_a_glitch_re_registration_keeps_executors_and_counts_a_reregistration() -> None:
    """Breaks if a node that comes back within the drain loses its executors, or its tasks are retried instead
    of finishing where they were."""
    h = cluster()
    h.tasks("s1", [b"x", b"y"])
    node = next(iter(h.nodes.values()))
    held = sorted(node.executors)
    node.online = False
    h.advance(3.5)
    node.online = True
    h.reregister(node)
    assert h.state.nodes[node.name].state is NodeState.Ready
    assert sorted(e.id for e in h.state.executors.values() if e.node == node.name) == held
    assert h.ctl.counters["reregistrations"] == 1
    assert h.ctl.counters["tasks_retried"] == 0
    node.run_tasks()
    h.pump()
    assert [t.state for t in h.state.sessions["s1"].tasks] == [TaskState.Succeed] * 2


def test_a_session_blocked_with_executors_on_an_unknown_node_does_not_thrash() -> None:
    """Found by the stateful test: tasks running on a node gone Unknown kept the session
    over its fair share of the Ready nodes, so its idle executors there were unbound and
    bound again forever (the harness's pump never settled)."""
    h = cluster(nodes=1)
    h.tasks("s1", [b"x"] * 7)
    lost = next(iter(h.nodes.values()))
    lost.online = False
    h.add_node("n2", 2, auto_run=False)
    h.add_node("n3", 2, auto_run=False)
    h.advance(4.0)  # n1 Unknown; pump() raises if the controller does not settle
    assert h.node_state("n1") is NodeState.Unknown
    bound = [e for e in h.state.executors.values() if e.node != "n1" and e.state is ExecutorState.Bound]
    assert len(bound) == 4


def test_plan_never_unbinds_a_session_executor_for_the_same_session() -> None:
    """Breaks if the scheduler unbinds or rebinds executors of a session for that same session (churn when a
    node is lost)."""
    r = ResourceRequirement(cpu=1, memory=1)
    session = scheduler.SessionView(
        "s1", 0, 0, r, pending=3, running=4, min_instances=0, max_instances=None, delay_release=0
    )
    executors = [
        scheduler.ExecutorView(f"u{i}", "gone", ExecutorState.Bound, r, "s1", None, in_flight=2) for i in range(2)
    ] + [scheduler.ExecutorView(f"e{i}", "ok", ExecutorState.Bound, r, "s1", None, in_flight=0) for i in range(2)]
    nodes = [
        scheduler.NodeView("gone", ResourceRequirement(cpu=2, memory=2), 2, ready=False),
        scheduler.NodeView("ok", ResourceRequirement(cpu=2, memory=2), 2, ready=True),
    ]
    plan = scheduler.plan(scheduler.ClusterView([session], executors, nodes), 0.0)
    assert plan.unbind == []
    assert plan.bind == []


def test_no_task_is_dispatched_to_an_executor_on_a_node_that_is_not_ready() -> None:
    """Tasks submitted while a node is Unknown go to the Ready nodes only; the silent node's
    idle executor gets work again once it is back (no retry counted for a launch it never saw)."""
    h = cluster(nodes=2, slots=1)
    h.tasks("s1", [b"a", b"b"])
    n1, n2 = h.nodes.values()
    for node in (n1, n2):
        node.run_tasks()
    h.pump()
    assert {e.node for e in h.state.executors.values() if e.state is ExecutorState.Bound} == {"n1", "n2"}
    n1.online = False
    h.advance(3.5)
    assert h.node_state("n1") is NodeState.Unknown
    h.tasks("s1", [b"c", b"d", b"e"])
    h.advance(0.5)
    on_n1 = [e for e in h.state.executors.values() if e.node == "n1"]
    assert [e.tasks for e in on_n1] == [{}], "a task was dispatched to the Unknown node"
    n1.online = True
    h.reregister(n1)
    h.tasks("s1", [b"f", b"g"])
    h.advance(0.5)
    assert any(q for q in n1.queued.values()), "the node back gets work again"
    for _ in range(3):
        for node in (n1, n2):
            node.run_tasks()
        h.advance(0.5)
    tasks = h.state.sessions["s1"].tasks
    assert [(t.state, t.retry_count) for t in tasks] == [(TaskState.Succeed, 0)] * 7


def test_a_pause_of_the_session_manager_is_not_blamed_on_its_nodes() -> None:
    """Breaks if time in which the session manager itself did not run (a VM pause, one very long
    turn) counts as the nodes' silence: on resuming, a node whose heartbeats wait unread in the
    socket would go Unknown at once, and NotReady if the pause outlasted the drain."""
    h = cluster(nodes=1)
    (task_id,) = h.tasks("s1", [b"x"])
    h.advance(1.0)
    h.t += 12.0  # frozen: longer than detection (3 s) and the drain (5 s); no tick, nothing read
    h.ctl.tick(h.now())  # the first tick after the pause comes before the queued heartbeats
    h.advance(1.0)
    assert h.node_state("n1") is NodeState.Ready
    assert h.ctl.counters["nodes_silent"] == 0
    assert h.ctl.counters["node_cleanups"] == 0
    assert h.ctl.counters["session_manager_stalls"] == 1
    assert h.state.sessions["s1"].tasks[task_id - 1].state is TaskState.Running


def test_a_node_that_died_during_the_pause_is_still_found_out() -> None:
    """Breaks if crediting the pause hides a node that really went away: it must go Unknown one
    detection time after the session manager resumes, and NotReady after the drain."""
    h = cluster(nodes=1)
    h.advance(1.0)
    node = next(iter(h.nodes.values()))
    node.online = False
    h.t += 12.0
    h.ctl.tick(h.now())
    assert h.node_state("n1") is NodeState.Ready
    h.advance(3.5)
    assert h.node_state("n1") is NodeState.Unknown
    h.advance(5.5)
    assert h.node_state("n1") is NodeState.NotReady


def test_an_overloaded_session_manager_still_finds_a_dead_node() -> None:
    """Breaks if the pause rule turns into never judging: with every tick late (each gap longer
    than a stall), a node that died must still go Unknown, then NotReady after the drain."""
    h = cluster(nodes=1)
    h.advance(1.0)
    next(iter(h.nodes.values())).online = False
    h.advance(30.0, step=2.5)  # every tick 2.5 s after the one before: each one a stall
    assert h.node_state("n1") is NodeState.NotReady
    assert h.ctl.counters["session_manager_stalls"] >= 2


def test_a_goodbye_to_a_restarted_session_manager_cleans_the_node_up_at_once() -> None:
    """Breaks if an executor manager that stops while the session manager restarts (its goodbye
    the first thing the new one hears) leaves its node Unknown until the drain expires, or if a
    goodbye naming another incarnation or epoch is taken."""
    h = cluster(nodes=2)
    n1, n2 = sorted(h.nodes.values(), key=lambda n: n.name)
    (task_id,) = h.tasks("s1", [b"x"])
    h.advance(0.5)
    assert [e.node for e in h.state.executors.values()] == ["n1"]
    restarted = Controller(h.ctl.config, h.state, new_id=h.ctl.new_id)
    h.ctl = restarted
    restarted.start(h.now())
    for node, epoch, incarnation in [(n1, n1.epoch, "another process"), (n2, n2.epoch + 1, n2.incarnation)]:
        node.seq += 1
        h.ctl.handle_node(node.peer, be.Goodbye(epoch=epoch, seq=node.seq, incarnation=incarnation), h.now())
    h.pump()
    assert [h.state.nodes[n].state for n in ("n1", "n2")] == [NodeState.Unknown] * 2  # left to their drains
    n1.seq += 1
    h.ctl.handle_node(n1.peer, be.Goodbye(epoch=n1.epoch, seq=n1.seq, incarnation=n1.incarnation), h.now())
    h.pump()
    assert [h.state.nodes[n].state for n in ("n1", "n2")] == [NodeState.NotReady, NodeState.Unknown]
    assert h.ctl.counters["node_cleanups"] == 1
    assert list(h.state.executors) == []
    task = h.state.sessions["s1"].tasks[task_id - 1]
    assert (task.state, task.retry_count) == (TaskState.Pending, 1)


def test_registrations_queued_during_a_pause_are_answered_once() -> None:
    """Breaks if each registration an executor manager retried while the session manager was
    paused is answered (one epoch, one record and one snapshot per try, each acted on by the
    executor manager), instead of the last one only."""
    h = cluster(nodes=2)
    n1, n2 = sorted(h.nodes.values(), key=lambda n: n.name)
    records_before, epoch_before = len(h.records), h.state.max_epoch
    n1.registered.clear()
    n2.seq += 1
    beat = be.Heartbeat(epoch=n2.epoch, seq=n2.seq)
    tries = [(n1.peer, n1.register_message()) for _ in range(3)]
    h.ctl.handle_nodes([tries[0], (n2.peer, beat), tries[1], tries[2]], h.now())
    h.pump()
    assert len(n1.registered) == 1
    assert n1.epoch == epoch_before + 1 == h.state.max_epoch
    assert len(h.records) - records_before == 1  # one NodeRegistered
    assert h.ctl.counters["registrations_superseded"] == 2
    assert h.link("n2").recv_seq == n2.seq  # the others' messages are handled as before
