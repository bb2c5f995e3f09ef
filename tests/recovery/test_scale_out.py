"""A node that joins a running session takes a share of the tasks already dispatched: the
session manager recalls what the busy executor has not started (`RecallTasks`) and hands it
to the newcomer. Real daemons and instances; nothing runs twice, no retry is counted."""

from __future__ import annotations

import time

import pytest

from protocol.types import TaskState
from tests.recovery.cluster import Cluster, since

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_a_node_that_joins_a_running_session_takes_a_share_of_its_queued_tasks(cluster: Cluster) -> None:
    c = cluster
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
    assert first and len(on_n2) >= 2, on_n2
    assert c.stat("tasks_returned") >= len(on_n2) and c.stat("tasks_retried") == 0
    assert c.stat("task_recalls") >= 1
    c.record("scale-out: node joins a running session", n2_ready=n2_ready, first_on_n2=first_on_n2, all_done=all_done)
