"""Tasks dispatched ahead move when the cluster changes: a node that joins a running session
takes a share of them, and an executor taken for a session of higher priority hands back the
queue of its old one. The session manager recalls what an executor has not started
(`RecallTasks`). Real daemons and instances; nothing runs twice, no retry is counted."""

from __future__ import annotations

import time

import pytest

from protocol import frontend as fe
from protocol.types import SessionSpec, TaskState
from tests.recovery.cluster import Cluster, since

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_a_node_that_joins_a_running_session_takes_a_share_of_its_queued_tasks(journal_cluster: Cluster) -> None:
    """Breaks if a node that joins a running session gets none of the tasks queued ahead on the first node, or
    a task runs twice."""
    c = journal_cluster
    c.start_em("n1", 1)
    c.wait_node("n1", "Ready")
    c.session()
    task_ids = c.submit("s1", [1.0] * 6)  # 6 s of work for n1's one executor alone
    c.wait_started(1)
    t0 = time.monotonic()
    c.start_em("n2", 1)
    n2_ready = c.wait_node("n2", "Ready") - t0
    n2 = c.pid("n2")
    first = c.wait("a task started on n2", lambda: [r for r in c.runs() if r.ppid == n2], timeout=15)
    first_on_n2 = since(t0)
    tasks = c.wait_tasks(TaskState.Succeed)
    all_done = since(t0)
    assert [(t.retry_count, t.output) for t in tasks] == [(0, b"1.0")] * 6
    assert [len(c.starts_of(t)) for t in task_ids] == [1] * 6  # each ran once
    on_n2 = {r.task for r in c.runs() if r.ppid == n2}
    assert first, on_n2  # (2-3 here; without the recall, none)
    assert on_n2, on_n2
    assert c.stat("tasks_returned") >= len(on_n2)
    assert c.stat("tasks_retried") == 0
    assert c.stat("task_recalls") >= 1
    c.record("scale-out: node joins a running session", n2_ready=n2_ready, first_on_n2=first_on_n2, all_done=all_done)


def test_an_executor_taken_for_a_higher_priority_session_hands_its_queue_back(journal_cluster: Cluster) -> None:
    """Breaks if a higher-priority session waits for every task queued ahead on the executor it takes, or a
    handed-back task runs twice."""
    c = journal_cluster
    c.start_em("n1", 1)
    c.wait_node("n1", "Ready")
    c.session("low")
    low_ids = c.submit("low", [1.0] * 6)  # all six queued on n1's only executor
    c.wait_started(1)
    t0 = time.monotonic()
    spec = SessionSpec(application="journal", priority=10)
    c.conn.request(fe.CreateSession(session_id="high", spec=spec), fe.SessionReply)
    (high_id,) = c.submit("high", [0.1])
    (high,) = c.wait_tasks(TaskState.Succeed, "high", timeout=15)
    high_done = since(t0)
    # Without the recall it waited for all six low tasks; now only for those its instance
    # held (the running one and the next: tasks on an instance must finish): 2 here, 3 at
    # most if a low task ended before the high session was scheduled.
    high_start = c.starts_of(high_id, "high")[0].time
    before = sorted(r.task for r in c.runs() if r.session == "low" and r.time < high_start)
    assert before == low_ids[: len(before)], before
    assert len(before) <= 3, before
    assert all(len(c.starts_of(t, "low")) <= 1 for t in low_ids)
    assert high.retry_count == 0
    assert c.stat("tasks_returned") >= 3
    assert c.stat("tasks_retried") == 0
    c.record("reclaim: higher-priority session takes the executor", high_done=high_done)
