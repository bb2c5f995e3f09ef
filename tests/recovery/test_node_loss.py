"""RFE384 scenarios where a node is lost: an outage longer than the drain (the late node's
executors, instances and completions are refused when it returns), an executor-manager crash
and quick restart, a node that keeps dying (Failed at the retry limit), a graceful stop."""

from __future__ import annotations

import signal
import time

import pytest

from protocol.types import TaskState
from tests.recovery.cluster import DETECTION, DRAIN, RETRY_LIMIT, Cluster, alive, since

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _one_task_on_n1(c: Cluster, seconds: float, slots: int = 1) -> int:
    """n1 alone runs a task of `seconds`; then n2 joins (so a rerun can go there)."""
    c.start_em("n1", slots)
    c.wait_node("n1", "Ready")
    c.session()
    (task_id,) = c.submit("s1", [seconds])
    c.wait_started(1)
    c.start_em("n2", 1)
    c.wait_node("n2", "Ready")
    return task_id


def test_outage_longer_than_drain_reruns_elsewhere_and_fences_the_late_node(journal_cluster: Cluster) -> None:
    """Breaks if a node frozen past the drain is not cleaned up and its task rerun on n2, or, when it comes
    back, its old instance survives or its late completion is recorded."""
    c = journal_cluster
    task_id = _one_task_on_n1(c, 2.0)
    (first,) = c.runs()
    assert first.ppid == c.pid("n1")
    old_executors = c.executors_on("n1")
    stale_before = c.stat("stale_node_messages") + c.stat("stale_completions_rejected")
    t0 = time.monotonic()
    c.signal("n1", signal.SIGSTOP)  # the instance finishes meanwhile: a late completion waits
    try:
        unknown_at = c.wait_node("n1", "Unknown", timeout=DETECTION + 3) - t0
        not_ready_at = c.wait_node("n1", "NotReady", timeout=DRAIN + 3) - t0
        rerun = c.wait_start("the rerun on n2", task_id, 2)
        rerun_at = since(t0)
        assert rerun.ppid == c.pid("n2")
        assert c.executors_on("n1") == []
        task = c.task(task_id)
        assert task.retry_count == 1
        assert task.attempt == 2
    finally:
        c.signal("n1", signal.SIGCONT)
    ready_again = c.wait_node("n1", "Ready", timeout=10) - t0
    (task,) = c.wait_tasks(TaskState.Succeed)
    # The completion recorded is n2's.
    assert task.attempt == 2
    assert task.retry_count == 1
    # The late node's old executors and instances are gone, its late completion refused.
    c.wait("n1's old instance to be killed", lambda: not alive(first.pid), timeout=10)
    assert not set(c.executors_on("n1")) & set(old_executors)

    # The late completion (attempt 1) is never recorded: either the executor manager sent it
    # on its old epoch and the session manager refused it (stale counter), or it noticed the
    # silence first, registered again and dropped it because the snapshot no longer lists it.
    def late_completion_refused() -> str | None:
        if c.stat("stale_node_messages") + c.stat("stale_completions_rejected") > stale_before:
            return "refused by the session manager"
        if f"s1/{task_id} attempt 1" in c.d.log("n1"):
            return "dropped by the executor manager after the snapshot"
        return None

    fate = c.wait("the late completion to be refused", late_completion_refused, timeout=5)
    assert len(c.starts_of(task_id)) == 2
    assert c.stat("node_cleanups") == 1
    assert c.stat("tasks_retried") == 1
    c.record(
        "c outage > drain",
        detection=unknown_at,
        cleanup=not_ready_at,
        rerun_started=rerun_at,
        late_node_ready=ready_again,
    )
    print(f"c: the late completion was {fate}")


def test_a_node_frozen_past_the_transport_timeout_rejoins(journal_cluster: Cluster) -> None:
    """n1 frozen 10 s: longer than the drain and than ZeroMQ's own heartbeat timeout (6 s), so
    the session manager has closed its side of the connection when n1 resumes, reconnects and
    registers again. Breaks if n1 does not get back in (never Ready again), if its task is not
    rerun exactly once, or if its late result is recorded over the rerun's."""
    c = journal_cluster
    task_id = _one_task_on_n1(c, 1.0)
    t0 = time.monotonic()
    c.signal("n1", signal.SIGSTOP)
    try:
        c.wait_node("n1", "NotReady", timeout=DETECTION + DRAIN + 3)
        time.sleep(max(0.0, 10.0 - since(t0)))  # the fault: n1 stays frozen this long
    finally:
        c.signal("n1", signal.SIGCONT)
    resumed = time.monotonic()
    ready_again = c.wait_node("n1", "Ready", timeout=15) - resumed
    (task,) = c.wait_tasks(TaskState.Succeed)
    assert (task.attempt, task.retry_count) == (2, 1)
    assert len(c.starts_of(task_id)) == 2
    c.record("n1 frozen 10 s", ready_after_resume=ready_again)


def test_executor_manager_crash_and_quick_restart_reruns_the_task_exactly_once(journal_cluster: Cluster) -> None:
    """Breaks if an executor manager killed and restarted at once leaves its instance alive, or its task is
    rerun other than exactly once."""
    c = journal_cluster
    c.start_em("n1", 1)
    c.wait_node("n1", "Ready")
    c.session()
    (task_id,) = c.submit("s1", [2.0])
    (first,) = c.wait_started(1)
    t0 = time.monotonic()
    c.kill("n1")
    c.wait("the instance to die with its executor manager", lambda: not alive(first.pid), timeout=5)
    c.start_em("n1", 1)
    rerun = c.wait_start("the rerun", task_id, 2)
    rerun_at = since(t0)
    assert rerun.ppid == c.pid("n1")
    assert rerun.pid != first.pid
    (task,) = c.wait_tasks(TaskState.Succeed)
    assert (task.attempt, task.retry_count) == (2, 1)
    time.sleep(DETECTION)  # nothing else comes
    assert len(c.starts_of(task_id)) == 2
    assert c.node_state("n1") == "Ready"
    assert c.stat("tasks_retried") == 1
    assert c.stat("node_cleanups") == 0
    c.record("d EM crash + quick restart", rerun_started=rerun_at)


def test_a_task_whose_node_keeps_dying_fails_at_the_retry_limit(journal_cluster: Cluster) -> None:
    """Breaks if a task whose node dies on every attempt is retried past task_retry_limit, or fails without
    saying so."""
    c = journal_cluster
    c.start_em("n1", 1)
    c.wait_node("n1", "Ready")
    c.session()
    (task_id,) = c.submit("s1", [60.0])
    t0 = time.monotonic()
    for attempt in range(1, RETRY_LIMIT + 2):
        run = c.wait_start(f"run {attempt}", task_id, attempt)
        assert len(c.starts_of(task_id)) == attempt
        c.kill("n1")
        c.wait_gone("the instance to die", run.pid, timeout=5)
        c.start_em("n1", 1)
    (task,) = c.wait_tasks(TaskState.Failed)
    failed_at = since(t0)
    assert task.retry_count == RETRY_LIMIT
    assert task.message is not None, task.message
    assert "retry limit" in task.message, task.message
    assert any("retry limit" in (e.message or "") for e in task.events), task.events
    time.sleep(1.0)
    assert len(c.starts_of(task_id)) == RETRY_LIMIT + 1
    assert c.stat("tasks_failed_retry_limit") == 1
    assert c.stat("tasks_retried") == RETRY_LIMIT
    c.record("g node keeps dying", failed_after=failed_at)


def test_graceful_stop_finishes_the_running_task_then_the_node_is_cleaned_up_at_once(journal_cluster: Cluster) -> None:
    """SIGTERM drains: the running task finishes where it is, queued ones are handed back
    unstarted (no retry counted); the goodbye makes the node NotReady at once."""
    c = journal_cluster
    c.start_em("n1", 1)
    c.wait_node("n1", "Ready")
    c.session()
    c.submit("s1", [1.5, 0.5])
    (first,) = c.wait_started(1)
    c.start_em("n2", 1)
    c.wait_node("n2", "Ready")
    t0 = time.monotonic()
    c.signal("n1", signal.SIGTERM)
    assert c.d.procs["n1"].wait(15) == 0
    exited = since(t0)
    not_ready_at = c.wait_node("n1", "NotReady", timeout=DETECTION) - t0
    assert not_ready_at - exited < DETECTION / 2, (exited, not_ready_at)
    tasks = c.wait_tasks(TaskState.Succeed)
    assert [(t.attempt, t.retry_count) for t in tasks] == [(1, 0), (1, 0)]
    assert [len(c.starts_of(t.id)) for t in tasks] == [1, 1]
    assert c.starts_of(1)[0].ppid == c.pid("n1")
    assert not alive(first.pid)
    assert c.executors_on("n1") == []
    assert c.stat("nodes_silent") == 0
    assert c.stat("tasks_retried") == 0
    where = "n1" if c.starts_of(2)[0].ppid == c.pid("n1") else "n2"
    c.record(f"h graceful EM stop (task 2 ran on {where})", exited=exited, cleanup=not_ready_at)


def test_a_draining_node_is_offered_no_work_and_its_queue_runs_elsewhere(journal_cluster: Cluster) -> None:
    """SIGTERM on a node with a long task and a queue: the session manager learns at once that
    the node is stopping and offers it no executor, bind or task; the queue it hands back runs
    on n2 with no retry counted. Breaks if binds keep bouncing off the draining node (a hot
    loop of refused binds, thousands of messages, until its goodbye)."""
    c = journal_cluster
    c.start_em("n1", 2)
    c.wait_node("n1", "Ready")
    c.session()
    c.submit("s1", [3.0])
    c.wait_started(1)
    c.submit("s1", [0.5] * 10)
    c.wait_started(2)
    messages_before = c.stat("node_messages")
    c.signal("n1", signal.SIGTERM)
    c.wait("n1 to show stopping", lambda: c.node("n1").stopping, timeout=DETECTION)
    c.start_em("n2", 2)
    c.wait_node("n2", "Ready")
    assert c.d.procs["n1"].wait(15) == 0
    c.wait_node("n1", "NotReady", timeout=DETECTION)
    during_drain = c.stat("node_messages") - messages_before
    tasks = c.wait_tasks(TaskState.Succeed)
    assert len(tasks) == 11
    assert all(t.retry_count == 0 for t in tasks)  # the drained ones went back unstarted
    assert all(len(c.starts_of(t.id)) == 1 for t in tasks)
    assert any(r.ppid == c.pid("n2") for r in c.runs())
    # Reports during the drain: a few (unbinds, the completions of n1's running tasks), plus
    # n2's registration traffic; a bind loop would be thousands.
    assert during_drain < 100, during_drain


def test_second_sigterm_stops_at_once_and_the_task_reruns_elsewhere(journal_cluster: Cluster) -> None:
    """Breaks if a second SIGTERM does not stop the executor manager at once (killing its instance), or its
    task is not rerun on n2."""
    c = journal_cluster
    task_id = _one_task_on_n1(c, 3.0)
    (first,) = c.runs()
    t0 = time.monotonic()
    c.signal("n1", signal.SIGTERM)
    time.sleep(0.3)
    c.signal("n1", signal.SIGTERM)
    not_ready_at = c.wait_node("n1", "NotReady", timeout=DETECTION) - t0
    rerun = c.wait_start("the rerun on n2", task_id, 2)
    rerun_at = since(t0)
    assert rerun.ppid == c.pid("n2")
    c.d.procs["n1"].wait(10)
    assert not alive(first.pid)
    assert c.executors_on("n1") == []
    (task,) = c.wait_tasks(TaskState.Succeed)
    assert (task.attempt, task.retry_count) == (2, 1)
    assert c.stat("nodes_silent") == 0
    assert c.stat("node_cleanups") == 1
    c.record("h' EM stopped at once (2nd SIGTERM)", cleanup=not_ready_at, rerun_started=rerun_at)
