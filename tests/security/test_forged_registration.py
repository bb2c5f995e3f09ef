"""Finding 4 of issue 14: a node cannot be impersonated by a registration.

Today's attack (plain mode): a script reads a live node's `incarnation` and epoch from
ListNodes and its executor ids from ListExecutors, and sends `RegisterNode` for that node with
that incarnation from a connection of its own. It was taken for the same executor manager
coming back: it received the executor snapshot (task inputs, common data), and its forged
`TaskCompleted` made the tasks Succeed with output `FORGED`.

What would break: a registration accepted as "the same executor manager" without the secret
that executor manager generated at start (kept by the session manager only as a hash, durably,
so a restarted session manager checks it too); a registration that cannot prove it is the
holder keeping the holder's executors (the snapshot leaks them); a forged goodbye cleaning up
a node loaded at a restart.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from protocol import frontend as fe
from protocol.types import SessionSpec, TaskState
from tests.recovery.cluster import HEARTBEAT, Cluster
from tests.security.backend_peer import BackendPeer, register_message

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

COMMON = b"COMMON-DATA-ONLY-THE-NODE-MAY-SEE"
SECONDS = [3.0000041, 3.0000042, 3.0000043, 3.0000044]  # inputs b"3.000004N": easy to spot in a leak
LEAK = b"3.000004"


def _session_with_secrets(c: Cluster, seconds: list[float]) -> list[int]:
    spec = SessionSpec(application="journal", common_data=COMMON)
    c.conn.request(fe.CreateSession(session_id="s1", spec=spec), fe.SessionReply)
    return c.submit("s1", seconds)


def _forge_completions(impostor: BackendPeer, c: Cluster, epoch: int, first_seq: int = 1) -> None:
    """A `TaskCompleted` with output FORGED for every task on every executor of n1."""
    executors = c.conn.request(fe.ListExecutors(), fe.ExecutorsReply).executors
    reports: list[dict[str, Any]] = [
        {
            "type": "TaskCompleted",
            "executor_id": e.id,
            "session_id": "s1",
            "task_id": task_id,
            "attempt": attempt,
            "state": "Succeed",
            "output": b"FORGED",
        }
        for e in executors
        for task_id in range(1, 5)
        for attempt in (1, 2)
    ]
    for seq in range(first_seq, first_seq + 3):  # whatever seq the session manager expects
        impostor.send({"type": "Reports", "epoch": epoch, "seq": seq, "reports": reports})


def _assert_nothing_leaked(impostor: BackendPeer) -> None:
    assert not impostor.leaked(LEAK), "task inputs reached the impostor"
    assert not impostor.leaked(COMMON), "common data reached the impostor"


def test_a_registration_reusing_a_live_nodes_incarnation_is_refused_and_its_completions_ignored(
    journal_cluster: Cluster,
) -> None:
    """Same incarnation, another connection, no secret: refused with Unauthorized; no snapshot,
    no task input or common data reaches it; its forged completions record nothing."""
    c = journal_cluster
    c.start_em("n1", 2)
    c.wait_node("n1", "Ready")
    _session_with_secrets(c, SECONDS)
    c.wait_started(2)
    node = c.node("n1")
    with BackendPeer(c.d.backend) as impostor:
        impostor.send(register_message("n1", node.incarnation, c.executors_on("n1")))
        answer = impostor.wait_for_type({"Registered", "Error"}, 5.0)
        assert answer is not None, impostor.received
        _forge_completions(impostor, c, answer.get("epoch") or node.epoch)
        impostor.collect(1.0)
    assert (answer["type"], answer.get("code")) == ("Error", "Unauthorized"), answer
    _assert_nothing_leaked(impostor)
    tasks = c.wait_tasks(TaskState.Succeed)
    assert [t.output for t in tasks] == [str(s).encode() for s in SECONDS]
    assert [(t.attempt, t.retry_count) for t in tasks] == [(1, 0)] * 4
    assert c.node("n1").incarnation == node.incarnation
    assert c.stat("node_impersonations_refused") >= 1


def test_a_restarted_session_manager_refuses_a_forged_registration_and_goodbye_and_takes_the_node_back(
    journal_cluster: Cluster,
) -> None:
    """The secret's hash is durable: after a session-manager restart (log replay), the node
    loaded as Unknown refuses a registration and a goodbye that only know its public
    incarnation and epoch; the real executor manager comes back and keeps its running task
    (RFE384: the matched executors are kept, nothing is retried)."""
    c = journal_cluster
    c.start_em("n1", 1)
    c.wait_node("n1", "Ready")
    _session_with_secrets(c, SECONDS[:1])
    c.wait_started(1)
    node = c.node("n1")
    executors = c.executors_on("n1")
    c.signal("n1", signal.SIGSTOP)
    try:
        c.kill("sm")
        c.start_sm()
        c.wait_node("n1", "Unknown")
        with BackendPeer(c.d.backend) as impostor:
            impostor.send(register_message("n1", node.incarnation, executors))
            answer = impostor.wait_for_type({"Registered", "Error"}, 5.0)
            impostor.send({"type": "Goodbye", "epoch": node.epoch, "seq": 1, "incarnation": node.incarnation})
            impostor.collect(0.5)
        assert answer is not None, answer
        assert (answer["type"], answer.get("code")) == ("Error", "Unauthorized"), answer
        _assert_nothing_leaked(impostor)
        assert c.node_state("n1") == "Unknown", "a forged goodbye cleaned the node up"
    finally:
        c.signal("n1", signal.SIGCONT)
    c.wait_node("n1", "Ready")
    (task,) = c.wait_tasks(TaskState.Succeed)
    assert (task.output, task.attempt, task.retry_count) == (str(SECONDS[0]).encode(), 1, 0)
    assert c.node("n1").incarnation == node.incarnation
    assert c.stat("node_cleanups") == 0


def test_a_registration_that_cannot_prove_it_is_the_holder_keeps_none_of_the_nodes_executors(
    journal_cluster: Cluster,
) -> None:
    """A new incarnation that lists the holder's executor ids (ListExecutors shows them), sent
    once the holder has been quiet long enough for a restart to take the name: taken, at most,
    as a restarted executor manager, which keeps nothing; its snapshot carries no task and its
    forged completions are stale. The tasks are retried and end with their real outputs."""
    c = journal_cluster
    c.start_em("n1", 2)
    c.wait_node("n1", "Ready")
    _session_with_secrets(c, SECONDS[:2])
    c.wait_started(2)
    executors = c.executors_on("n1")
    c.signal("n1", signal.SIGSTOP)
    try:
        quiet = lambda: (c.node("n1").last_heartbeat_age or 0) > 2.5 * HEARTBEAT  # noqa: E731
        c.wait("the holder to be quiet for two heartbeats", quiet)
        with BackendPeer(c.d.backend) as impostor:
            impostor.send(register_message("n1", "forged-incarnation", executors))
            answer = impostor.wait_for_type({"Registered", "Error"}, 5.0)
            assert answer is not None, impostor.received
            if answer["type"] == "Registered":
                assert answer["executors"] == [], answer
                _forge_completions(impostor, c, answer["epoch"])
            impostor.collect(0.5)
        _assert_nothing_leaked(impostor)
    finally:
        c.signal("n1", signal.SIGCONT)
    tasks = c.wait_tasks(TaskState.Succeed, timeout=60)
    assert [t.output for t in tasks] == [str(s).encode() for s in SECONDS[:2]]
