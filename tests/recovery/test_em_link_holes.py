"""Issue 16, holes 1 and 2, with real daemons: a node that did nothing wrong is not written off
after a session-manager restart, and a resumed executor manager starts no stale task.

Hole 1: the reconnect of every DEALER backed off to 5 s whatever `reconnect_backoff_max` said,
so after a session-manager outage of several seconds a live node came back later than a short
drain and its running tasks ran twice. Hole 2: an executor manager resumed after a freeze
longer than detection + drain kept feeding its instances tasks the session manager had put
back to Pending before it registered again, so they ran twice.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from protocol.types import TaskState
from tests.recovery.cluster import CONFIG, DETECTION, Cluster, since
from tests.support.daemons import Daemons

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

#: shorter than the recovery suite's drain; still detection (2 s) + reconnect_backoff_max (1 s)
SHORT_DRAIN = 3.0
#: a session-manager outage well past the old 5 s cap's first long wait: the old backoff's
#: connection tries fall about 8.3 s and 13.3 s after the executor manager noticed, so a
#: session manager back at ~9 s was seen only after the short drain had expired
OUTAGE = 8.3


@pytest.fixture
def short_drain(daemons: Daemons) -> Iterator[Cluster]:
    c = Cluster(daemons)
    config = CONFIG.replace("drain_timeout = 4.0", f"drain_timeout = {SHORT_DRAIN}")
    assert config != CONFIG
    daemons.config.write_text(config)
    c.start_sm()
    c.register_app()
    yield c
    c.close()


def test_a_live_node_is_back_before_a_short_drain_after_a_long_session_manager_outage(short_drain: Cluster) -> None:
    """Breaks if the executor manager's connection retries back off beyond
    `reconnect_backoff_max` (the old fixed 5 s cap), or if it waits on its registration backoff
    once connected: the restarted session manager's drain expires first, the node goes
    NotReady and both long tasks run twice (retry_count 1)."""
    c = short_drain
    c.start_em("n1", 2)
    c.wait_node("n1", "Ready")
    c.session()
    c.submit("s1", [OUTAGE + 8.0, OUTAGE + 8.0])
    c.wait_started(2)
    c.kill("sm")
    t0 = time.monotonic()
    time.sleep(OUTAGE)  # the fault itself: the session manager stays down this long
    c.start_sm()
    back = c.wait_node("n1", "Ready", timeout=SHORT_DRAIN + 10) - t0
    tasks = c.wait_tasks(TaskState.Succeed, timeout=40)
    assert [t.retry_count for t in tasks] == [0, 0]
    assert [len(c.starts_of(t.id)) for t in tasks] == [1, 1]
    assert c.stat("node_cleanups") == 0
    c.record("hole 1: SM down 8.3s, drain 3s", node_ready_again=back, all_done=since(t0))


def test_a_resumed_executor_manager_starts_no_stale_task_before_it_registers_again(journal_cluster: Cluster) -> None:
    """Breaks if an executor manager resumed after a freeze longer than detection + drain hands
    its instance a queued task before the session manager has confirmed its executors again:
    the session manager has put that task back to Pending, so it starts twice."""
    c = journal_cluster
    c.start_em("n1", 1)
    c.wait_node("n1", "Ready")
    c.session()
    ids = c.submit("s1", [0.3] * 40)
    c.wait_started(4)  # the instance's pace is known: one task at a time
    c.signal("n1", signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        c.wait_node("n1", "NotReady", timeout=DETECTION + 4.0 + 10)
        written_off = since(stopped)
    finally:
        resumed = time.time()
        c.signal("n1", signal.SIGCONT)
    tasks = c.wait_tasks(TaskState.Succeed, timeout=60)
    assert len(tasks) == len(ids)
    started_before = {r.task for r in c.runs() if r.time < resumed}
    twice = [t for t in ids if t not in started_before and len(c.starts_of(t)) > 1]
    assert twice == [], f"tasks first started after the resume and run twice: {twice}"
    c.record("hole 2: EM frozen past the drain", written_off=written_off)
