"""RFE384 scenarios across a session-manager crash (SIGKILL) and restart: tasks on live
executors are not run twice, and a node that never returns is cleaned up after the drain."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from protocol.types import TaskState
from tests.recovery.cluster import DETECTION, DRAIN, Cluster, alive, since

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _restart_sm(c: Cluster) -> float:
    c.kill("sm")
    t0 = time.monotonic()
    c.start_sm()
    return t0


def test_session_manager_crash_and_restart_runs_no_task_twice(journal_cluster: Cluster) -> None:
    """Breaks if a session manager killed and restarted loses a result, reruns a task, or does not take its
    live node back by a new registration."""
    c = journal_cluster
    c.start_em("n1", 2)
    c.wait_node("n1", "Ready")
    c.session()
    c.submit("s1", [1.0, 2.0, 2.0])
    c.wait_started(2)
    c.kill("sm")
    t0 = time.monotonic()
    c.wait("a task to end while the session manager is down", lambda: c.runs("end"), timeout=5)
    c.start_sm()
    # R8: loaded Unknown with the drain timer started at boot. The live node may register again
    # before a first ListNodes is answered on a slow machine, so the log is the witness.
    assert "node n1: Unknown after restart" in c.d.log("sm")
    ready_at = c.wait_node("n1", "Ready", timeout=DETECTION + 3) - t0
    assert c.node("n1").epoch == 2  # back by registering again, not by a heartbeat of epoch 1
    tasks = c.wait_tasks(TaskState.Succeed)
    done_at = since(t0)
    assert [(t.retry_count, t.output) for t in tasks] == [(0, b"1.0"), (0, b"2.0"), (0, b"2.0")]
    assert [len(c.starts_of(t.id)) for t in tasks] == [1, 1, 1]
    assert len(c.runs("end")) == 3
    assert c.stat("node_cleanups") == 0
    assert c.stat("tasks_retried") == 0
    c.record("e SM crash + restart", node_ready_again=ready_at, all_done=done_at)


def test_a_node_that_never_returns_after_a_restart_is_cleaned_up_after_the_drain(journal_cluster: Cluster) -> None:
    """Breaks if, after a restart, a node that never returns is cleaned up before the drain or never, or its
    task is not rerun on the other node."""
    c = journal_cluster
    c.start_em("n1", 1)
    c.wait_node("n1", "Ready")
    c.session()
    (task_id,) = c.submit("s1", [3.0])
    (first,) = c.wait_started(1)
    c.start_em("n2", 1)
    c.wait_node("n2", "Ready")
    c.kill("n1")  # never returns
    t0 = _restart_sm(c)
    assert not alive(first.pid)
    assert c.node_state("n1") == "Unknown"
    n2_ready = c.wait_node("n2", "Ready", timeout=DETECTION + 3) - t0
    assert c.node_state("n1") == "Unknown"
    assert c.task(task_id).state is TaskState.Running
    not_ready_at = c.wait_node("n1", "NotReady", timeout=DRAIN + 3) - t0
    assert not_ready_at >= DRAIN - 0.5
    rerun = c.wait_start("the rerun on n2", task_id, 2)
    rerun_at = since(t0)
    assert rerun.ppid == c.pid("n2")
    (task,) = c.wait_tasks(TaskState.Succeed)
    assert (task.attempt, task.retry_count) == (2, 1)
    assert c.executors_on("n1") == []
    assert c.stat("node_cleanups") == 1
    assert c.stat("tasks_retried") == 1
    c.record("f node never returns after SM restart", n2_ready=n2_ready, cleanup=not_ready_at, rerun_started=rerun_at)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_no_hot_loop_while_the_session_manager_is_away_and_instances_keep_running(journal_cluster: Cluster) -> None:
    """I6: with the session manager gone the executor manager backs off (little CPU), keeps its
    instance (and the task in it) running, and registers again when it is back."""
    c = journal_cluster
    c.start_em("n1", 1)
    c.wait_node("n1", "Ready")
    c.session()
    (task_id,) = c.submit("s1", [1.0])
    (first,) = c.wait_started(1)
    c.kill("sm")
    em = c.pid("n1")
    cpu0, t0 = _cpu_seconds(em), time.monotonic()
    time.sleep(DETECTION + 2.0)
    cpu = _cpu_seconds(em) - cpu0
    away = since(t0)
    assert cpu < 0.25 * away, f"{cpu:.2f}s CPU in {away:.1f}s away"
    assert alive(first.pid)
    c.start_sm()
    (task,) = c.wait_tasks(TaskState.Succeed)
    assert task.retry_count == 0
    assert len(c.starts_of(task_id)) == 1
    c.record("I6 SM away", em_cpu=cpu, away=away)
