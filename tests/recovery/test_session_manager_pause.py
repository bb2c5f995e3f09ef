"""RFE384 with the session manager itself frozen (SIGSTOP/SIGCONT), as in a VM pause or a swap
storm: everything it should have heard waits unread in its sockets, and the executor managers,
hearing nothing, register again and again; their connections even time out at the ZeroMQ level
(ZMTP heartbeats, 6 s) and reconnect with the same routing id.

What would break: the session manager blaming the nodes for its own pause (Unknown, then
NotReady after the drain, tasks retried), a reconnected peer never heard again (a ROUTER
without handover ignores a newcomer whose id it still holds), or a task run twice because the
queued registrations are answered one after the other and a result waiting to be resent looked
like a task to launch again.
"""

from __future__ import annotations

import signal
import time

import pytest

from protocol.types import TaskState
from tests.recovery.cluster import DETECTION, DRAIN, Cluster, since

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ZMTP_TIMEOUT = 6.0  # transport/sockets.py: HEARTBEAT_TIMEOUT


def _states_until(c: Cluster, node: str, done: float) -> list[str]:
    seen: list[str] = []
    while time.monotonic() < done:
        state = c.node_state(node)
        if not seen or seen[-1] != state:
            seen.append(state)
        time.sleep(0.05)
    return seen


@pytest.mark.parametrize("pause", [DETECTION + 1.0, max(DRAIN, ZMTP_TIMEOUT) + 2.0])
def test_a_paused_session_manager_blames_no_node_and_runs_no_task_twice(journal_cluster: Cluster, pause: float) -> None:
    """A pause longer than detection, then one longer than the drain and the ZMTP timeout: the
    task that finished meanwhile is recorded once, from its first run; the node stays Ready."""
    c = journal_cluster
    c.start_em("n1", 1)
    c.wait_node("n1", "Ready")
    c.session()
    (task_id,) = c.submit("s1", [2.0])
    c.wait_started(1)
    c.signal("sm", signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        c.wait("the task to end while the session manager is frozen", lambda: c.runs("end"), timeout=5)
        time.sleep(max(0.0, pause - since(t0)))  # the fault: the session manager stays frozen this long
    finally:
        c.signal("sm", signal.SIGCONT)
    resumed = time.monotonic()
    (task,) = c.wait_tasks(TaskState.Succeed, timeout=DETECTION + 10)
    done_at = since(resumed)
    states = _states_until(c, "n1", time.monotonic() + DRAIN + 1.0)
    assert states == ["Ready"], states
    assert (task.attempt, task.retry_count) == (1, 0)
    assert len(c.starts_of(task_id)) == 1
    assert c.stat("node_cleanups") == 0
    assert c.stat("tasks_retried") == 0
    assert c.stat("session_manager_stalls") >= 1
    c.record(f"SM frozen {pause:.0f}s", result_recorded_after_resume=done_at)
