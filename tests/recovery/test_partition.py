"""RFE384 over a real network cut: executor manager n1 lives in its own network namespace and
talks to the session manager over TCP through a veth pair; the test sets the link down and up.
Unlike SIGSTOP, both sides keep running through the cut: n1 goes on with its task, notices the
silence itself and keeps its result for when it gets through again.

What would break: a node marked NotReady on a cut shorter than the drain (a needless rerun), a
task left waiting on a node that is cut off for good, a cut-off node's late result recorded over
the rerun's, or its orphan instance kept alive after it rejoins (I1, I2, I3, I4, I5).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from protocol.types import TaskState
from tests.recovery.cluster import CONFIG, DETECTION, DRAIN, Cluster, alive, since
from tests.recovery.netns import Link
from tests.support.daemons import Daemons, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
def link() -> Iterator[Link]:
    """Asked for before `daemons`, so the daemons are stopped before the namespace goes."""
    made = Link.create()
    try:
        yield made
    finally:
        made.remove()


def partitioned(daemons: Daemons, link: Link, drain: float = DRAIN) -> Cluster:
    """The session manager's backend on the host end of the veth pair (n1 reaches it only
    through the link; nodes started here reach it directly)."""
    daemons.backend = f"tcp://{link.outside}:{free_port(link.outside)}"
    c = Cluster(daemons)
    daemons.config.write_text(CONFIG.replace(f"drain_timeout = {DRAIN}", f"drain_timeout = {drain}"))
    c.start_sm()
    c.register_app()
    return c


def test_cut_longer_than_the_drain_reruns_elsewhere_and_the_node_rejoins_clean(link: Link, daemons: Daemons) -> None:
    """Breaks if a node cut off for longer than the drain keeps its task (I1), if its late
    result is recorded over the rerun's (I2), or if its orphan instance survives the heal (I5)."""
    c = partitioned(daemons, link)
    c.start_em("n1", 1, netns=link.name)
    c.wait_node("n1", "Ready")
    c.session()
    (task_id,) = c.submit("s1", [8.0])
    (first,) = c.wait_started(1)
    assert first.ppid == c.pid("n1")
    c.start_em("n2", 1)
    c.wait_node("n2", "Ready")

    t0 = time.monotonic()
    link.cut()
    try:
        unknown_at = c.wait_node("n1", "Unknown", timeout=DETECTION + 3) - t0
        not_ready_at = c.wait_node("n1", "NotReady", timeout=DRAIN + 3) - t0
        rerun = c.wait_start("the rerun on n2", task_id, 2)
        rerun_at = since(t0)
        assert rerun.ppid == c.pid("n2")
        # n1 did not stop: its copy still runs, out of the session manager's sight (I3).
        assert alive(first.pid)
        assert c.d.alive("n1")
        assert c.executors_on("n1") == []
    finally:
        link.heal()
    ready_again = c.wait_node("n1", "Ready", timeout=20) - t0
    c.wait("n1's orphan instance to be killed", lambda: not alive(first.pid), timeout=15)
    (task,) = c.wait_tasks(TaskState.Succeed)
    # n2's completion, not n1's late one.
    assert task.attempt == 2
    assert task.retry_count == 1
    assert len(c.starts_of(task_id)) == 2
    assert c.stat("node_cleanups") == 1
    assert c.stat("tasks_retried") == 1
    c.record(
        "partition > drain",
        detection=unknown_at,
        cleanup=not_ready_at,
        rerun_started=rerun_at,
        healed_node_ready=ready_again,
    )


def test_cut_shorter_than_the_drain_reruns_nothing(link: Link, daemons: Daemons) -> None:
    """Breaks if a cut shorter than the drain makes the node NotReady or reruns its task, or if
    the task that ran on through the cut is not recorded once, where it ran (I4, I1, I2)."""
    drain = 10.0  # far above the cut, so TCP's retransmission backoff after the heal cannot reach it
    c = partitioned(daemons, link, drain=drain)
    c.start_em("n1", 1, netns=link.name)
    c.wait_node("n1", "Ready")
    c.session()
    (task_id,) = c.submit("s1", [5.0])
    (first,) = c.wait_started(1)

    t0 = time.monotonic()
    link.cut()
    try:
        unknown_at = c.wait_node("n1", "Unknown", timeout=DETECTION + 3) - t0
        time.sleep(max(0.0, DETECTION + 1.0 - since(t0)))  # the fault: the link stays down this long
    finally:
        link.heal()
    ready_again = c.wait_node("n1", "Ready", timeout=drain) - t0
    (task,) = c.wait_tasks(TaskState.Succeed, timeout=30)
    assert task.attempt == 1
    assert task.retry_count == 0
    assert [r.pid for r in c.starts_of(task_id)] == [first.pid]  # ran once, where it started
    assert alive(first.pid)  # the instance was kept: its executor is still the node's
    assert c.stat("node_cleanups") == 0
    assert c.stat("tasks_retried") == 0
    c.record("partition < drain", detection=unknown_at, ready_again=ready_again)


CLIENT = """
import sys
from flamed.client import open_connection
with open_connection(sys.argv[1], timeout=30) as conn:
    session = conn.create_session("journal")
    futures = [session.run(b"0.4") for _ in range(20)]
    print("submitted", flush=True)
    print("results", sum(f.result(120) == b"0.4" for f in futures), flush=True)
"""


def test_a_client_cut_off_mid_run_gets_every_result_after_the_heal(link: Link, daemons: Daemons) -> None:
    """The client, in its own namespace, loses its link to the session manager for longer than
    ZeroMQ's heartbeat timeout while its tasks finish. Breaks if the results pushed meanwhile
    are lost for good (the SDK must renew its watches on the new connection, and the session
    manager must let it back in under its old routing id) or if any future fails."""
    daemons.frontend = f"tcp://{link.outside}:{free_port(link.outside)}"
    c = Cluster(daemons)
    c.start_sm()
    c.register_app()
    c.start_em("n1", 2)
    c.wait_node("n1", "Ready")
    client = subprocess.Popen(
        ["ip", "netns", "exec", link.name, sys.executable, "-c", CLIENT, daemons.frontend],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=daemons.env,
        text=True,
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "submitted"
        c.wait_started(2)
        link.cut()
        cut_at = time.monotonic()
        try:
            c.wait("every task to finish during the cut", lambda: len(c.runs("end")) == 20, timeout=20)
            time.sleep(max(0.0, 8.0 - since(cut_at)))  # the fault: past ZeroMQ's 6 s heartbeat timeout
        finally:
            link.heal()
        healed = time.monotonic()
        out, _ = client.communicate(timeout=60)
        answered = since(healed)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, out
    assert out.strip().splitlines()[-1] == "results 20", out
    assert sorted(r.task for r in c.runs()) == list(range(1, 21))  # each task ran once
    c.record("client cut off mid-run", results_after_heal=answered)
