"""Retention across restarts of a real session manager (issue 17): what expired stays expired
(and reading it still says why), what did not is intact, whether the state comes back from the
log alone (kill -9) or from a snapshot (SIGTERM writes one).

What would break: expiry applied in memory only (a restart brings expired sessions back), a
snapshot that drops the tombstones or a session's gaps, or held tasks lost with expired ones."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.daemons import Daemons, RawClient, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def run_to_the_end(client: RawClient, session_id: str, count: int, *, close: bool) -> None:
    reply = client.call({"type": "CreateSession", "session_id": session_id, "spec": {"application": "flmping"}})
    assert reply["type"] == "SessionReply", reply
    reply = client.call({"type": "CreateTasks", "session_id": session_id, "inputs": [b"x"] * count})
    assert reply["type"] == "TasksCreated", reply

    def done() -> bool:
        session = client.call({"type": "GetSession", "session_id": session_id})["session"]
        return session.get("succeed", 0) == count or None  # type: ignore[return-value]

    wait_for(f"{count} tasks of {session_id} to succeed", done, timeout=40)
    if close:
        assert client.call({"type": "CloseSession", "session_id": session_id})["type"] == "SessionReply"


def held(client: RawClient) -> dict[str, Any]:
    sessions = client.call({"type": "ListSessions"})["sessions"]
    return {
        s["id"]: (s["state"], s.get("succeed", 0), [t["id"] for t in client.list_tasks(s["id"])])
        for s in sessions
        if s["id"] != "flmping"
    }


def test_what_expired_stays_expired_after_restarts(daemons: Daemons) -> None:
    """kill -9 (log replay) and SIGTERM (snapshot) restarts keep expired sessions and tasks
    expired, their reads saying why, and the held ones as they were."""
    with daemons.config.open("a") as config:
        config.write("[retention]\nclosed_session_ttl = 1.0\nmax_finished_tasks = 6\ncheck_interval = 0.1\n")
    daemons.start_session_manager()
    daemons.start_executor_manager("n1", 1)
    daemons.wait_ready_nodes(1)
    with daemons.client() as client:
        run_to_the_end(client, "gone", 3, close=True)

        def expired() -> bool:
            reply = client.call({"type": "GetSession", "session_id": "gone"})
            return reply["type"] == "Error" or None  # type: ignore[return-value]

        wait_for("session 'gone' to expire", expired, timeout=20)
        run_to_the_end(client, "open", 8, close=False)
        wait_for(
            "the open session's oldest finished tasks to expire", lambda: len(client.list_tasks("open")) == 6 or None
        )
        before = held(client)
        assert before == {"open": ("Open", 8, [3, 4, 5, 6, 7, 8])}

    for how in ("kill", "term"):
        proc = daemons.procs["sm"]
        if how == "kill":
            proc.kill()
            proc.wait()
        else:
            assert daemons.stop("sm") == 0
        daemons.start_session_manager()
        with daemons.client() as client:
            assert held(client) == before, how
            reply = client.call({"type": "GetSession", "session_id": "gone"})
            assert reply["type"] == "Error", reply
            assert "expired under retention (closed_session_ttl)" in reply["message"], reply
            reply = client.call({"type": "GetTask", "session_id": "open", "task_id": 1})
            assert reply["type"] == "Error", reply
            assert "expired under retention (max_finished_tasks)" in reply["message"], reply
            reply = client.call({"type": "GetSession", "session_id": "never"})
            assert reply["type"] == "Error", reply
            assert "expired" not in reply["message"], reply
            stats = client.call({"type": "GetStats"})["stats"]
            assert stats["finished_tasks_held"] == 6, how
