"""RFE384 scenarios with the executor manager paused (SIGSTOP/SIGCONT): a glitch shorter than
detection, and one longer than detection but shorter than the drain. Neither re-runs a task."""

from __future__ import annotations

import signal
import time

import pytest

from flamed.cli import flmctl
from protocol.types import ConnectionState, TaskState
from tests.recovery.cluster import DETECTION, DRAIN, Cluster, since

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _states_while(c: Cluster, node: str, seconds: float) -> list[tuple[float, str]]:
    """Sample the node's state for `seconds`; (time since start, state) at each change."""
    seen: list[tuple[float, str]] = []
    t0 = time.monotonic()
    while since(t0) < seconds:
        state = c.node_state(node)
        if not seen or seen[-1][1] != state:
            seen.append((since(t0), state))
        time.sleep(0.05)
    return seen


def test_glitch_shorter_than_detection_changes_nothing(journal_cluster: Cluster) -> None:
    """Breaks if an executor manager paused for less than the detection time is seen as anything but Ready, or
    any task is retried."""
    c = journal_cluster
    c.start_em("n1", 2)
    c.wait_node("n1", "Ready")
    c.session()
    c.submit("s1", [2.5, 2.5])
    c.wait_started(2)
    c.signal("n1", signal.SIGSTOP)
    try:
        seen = _states_while(c, "n1", DETECTION / 2)
    finally:
        c.signal("n1", signal.SIGCONT)
    assert [s for _, s in seen] == ["Ready"], seen
    tasks = c.wait_tasks(TaskState.Succeed)
    assert [(t.attempt, t.retry_count) for t in tasks] == [(1, 0), (1, 0)]
    assert [len(c.starts_of(t.id)) for t in tasks] == [1, 1]
    assert c.node_state("n1") == "Ready"
    assert c.stat("nodes_silent") == 0
    assert c.stat("node_cleanups") == 0
    assert c.stat("tasks_retried") == 0
    c.record("a glitch < detection", paused=DETECTION / 2)


def test_glitch_longer_than_detection_shorter_than_drain_reruns_nothing(journal_cluster: Cluster) -> None:
    """Breaks if a node paused past detection but within the drain is not shown Unknown and Draining, or, once
    back, loses its executors or reruns a task."""
    c = journal_cluster
    c.start_em("n1", 2)
    c.wait_node("n1", "Ready")
    c.session()
    c.submit("s1", [1.0, 4.0])  # one completes while the executor manager is paused
    c.wait_started(2)
    registrations = c.stat("registrations")
    t0 = time.monotonic()
    c.signal("n1", signal.SIGSTOP)
    try:
        unknown_at = c.wait_node("n1", "Unknown", timeout=DETECTION + 3) - t0
        node = c.node("n1")
        assert node.connection is ConnectionState.Draining
        assert node.last_heartbeat_age is not None
        assert node.last_heartbeat_age > DETECTION
        row = flmctl.node_table([node]).splitlines()[1].split()
        assert row[2] == "Unknown"
        assert row[-2] == "Draining"
        assert float(row[-1].rstrip("s")) >= DETECTION - 0.1
        time.sleep(max(0.0, 3.0 - since(t0)))
    finally:
        c.signal("n1", signal.SIGCONT)
    resumed = since(t0)
    ready_at = c.wait_node("n1", "Ready", timeout=DRAIN) - t0
    assert resumed < DETECTION + DRAIN
    tasks = c.wait_tasks(TaskState.Succeed)
    assert [(t.attempt, t.retry_count) for t in tasks] == [(1, 0), (1, 0)]
    assert [len(c.starts_of(t.id)) for t in tasks] == [1, 1]
    assert [t.output for t in tasks] == [b"1.0", b"4.0"]
    assert c.stat("node_cleanups") == 0
    assert c.stat("tasks_retried") == 0
    assert c.stat("nodes_silent") == 1
    assert c.stat("registrations") == registrations + 1
    assert c.stat("reregistrations") == 1
    node = c.node("n1")
    assert node.connection is ConnectionState.Connected
    assert node.last_heartbeat_age is not None
    assert node.last_heartbeat_age < DETECTION
    assert len(c.executors_on("n1")) == 2
    c.record("b detection < glitch < drain", detection=unknown_at, paused=resumed, ready_again=ready_at)
