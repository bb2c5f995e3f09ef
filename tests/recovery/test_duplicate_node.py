"""A second live executor manager with a node name already held is refused with a clear
error; a restarted one takes the name over once the old one is silent (R10)."""

from __future__ import annotations

import signal
import time

import pytest

from protocol.types import TaskState
from tests.recovery.cluster import Cluster, alive, since

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_duplicate_node_name_is_refused_then_taken_over_after_the_holder_dies(journal_cluster: Cluster) -> None:
    """Breaks if a second executor manager takes a live node's name, is not told why, or does not take the name
    over once the holder dies."""
    c = journal_cluster
    c.start_em("n1", 1)
    c.wait_node("n1", "Ready")
    holder = c.node("n1").incarnation
    c.start_em("n1", 1, proc="n1-second")
    c.wait("the refusal in the second one's log", lambda: "refused" in c.d.log("n1-second"), timeout=10)
    log = c.d.log("n1-second")
    assert "is held by a live executor manager" in log, log[-2000:]
    assert "--node-name" in log, log[-2000:]
    assert c.stat("duplicate_nodes_refused") >= 1
    time.sleep(1.5)  # still refused while the holder is live: nothing changes
    node = c.node("n1")
    assert (str(node.state), node.incarnation) == ("Ready", holder)
    assert c.d.alive("n1-second")
    t0 = time.monotonic()
    c.kill("n1")
    c.wait("the second one to take the name over", lambda: c.node("n1").incarnation != holder, timeout=10)
    took_over = since(t0)
    assert c.node_state("n1") == "Ready"
    assert c.d.log("n1-second").count("registered (epoch") == 1
    c.record("i duplicate node name", takeover_after_holder_died=took_over)


def test_a_paused_holder_that_lost_its_name_kills_its_instances_when_it_resumes(journal_cluster: Cluster) -> None:
    """The holder pauses long enough for a second executor manager to take the name over;
    the session manager retries its task there. When the holder resumes it is refused, and
    the instances it still runs are orphans: they must be killed, not left running (I5)."""
    c = journal_cluster
    c.start_em("n1", 1)
    c.wait_node("n1", "Ready")
    c.session()
    (task_id,) = c.submit("s1", [4.0])
    (first,) = c.wait_started(1)
    holder = c.node("n1").incarnation
    c.signal("n1", signal.SIGSTOP)
    try:
        c.start_em("n1", 1, proc="n1-second")
        c.wait("the second one to take the name over", lambda: c.node("n1").incarnation != holder, timeout=10)
        rerun = c.wait_start("the rerun", task_id, 2)
        assert rerun.ppid == c.pid("n1-second")
    finally:
        c.signal("n1", signal.SIGCONT)
    t0 = time.monotonic()
    c.wait("the old holder's orphan instance to be killed", lambda: not alive(first.pid), timeout=10)
    killed = since(t0)
    (task,) = c.wait_tasks(TaskState.Succeed)
    assert (task.attempt, task.retry_count) == (2, 1)
    assert c.node("n1").incarnation != holder
    assert c.node_state("n1") == "Ready"
    c.record("i' paused holder loses its name", orphan_killed_after_resume=killed)
