"""Graceful operations with real daemons: `flmctl drain` cordons a node (no new executors,
running tasks finish), `flmctl undrain` restores it, and SIGTERM on an executor manager with
running tasks loses none of them and counts no retry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemons import REPO, Daemons, RawClient
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SLEEPER = Path(__file__).resolve().parent / "services" / "sleeper.py"


def _flmctl(daemons: Daemons, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "flamed.cli.flmctl", *args],
        check=False,
        capture_output=True,
        text=True,
        env=daemons.env,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _start(daemons: Daemons) -> Any:
    from flamed import client as flame

    # One task at a time per executor, so the work spreads over both nodes.
    daemons.config.write_text(daemons.config.read_text() + "[cluster]\ndispatch_depth = 1\n")
    daemons.start_session_manager()
    daemons.start_executor_manager("n1", 2)
    daemons.start_executor_manager("n2", 2)
    daemons.wait_ready_nodes(2)
    flame.connect(daemons.frontend)
    flame.register_application(
        "sleeper",
        flame.ApplicationAttributes(
            command=sys.executable, arguments=[str(SLEEPER)], environments={"PYTHONPATH": str(REPO)}
        ),
    )
    return flame


def _tasks(client: RawClient, session_id: str) -> list[dict[str, Any]]:
    reply = client.call({"type": "ListTasks", "session_id": session_id, "include_data": False})
    return list(reply["tasks"])


def _executors_on(client: RawClient, node: str) -> set[str]:
    return {e["id"] for e in client.call({"type": "ListExecutors"})["executors"] if e["node"] == node}


def _node(client: RawClient, name: str) -> dict[str, Any]:
    return dict(client.call({"type": "GetNode", "name": name})["node"])


def test_drain_keeps_new_executors_off_and_undrain_restores(daemons: Daemons) -> None:
    """Would break if the scheduler ignored the drained flag, if a drain killed running work,
    or if the flag were not durable (checked across a session-manager restart)."""
    flame = _start(daemons)
    with daemons.client() as client:
        first = flame.create_session("sleeper")
        futures = [first.run(b"2") for _ in range(4)]
        wait_for(
            "4 running tasks",
            lambda: sum(t["state"] == "Running" for t in _tasks(client, first.id)) == 4,
            timeout=60,
        )
        before = _executors_on(client, "n1")
        assert before, "the load did not reach n1"
        assert "was drained" in _flmctl(daemons, "drain", "-n", "n1")
        assert _node(client, "n1")["drained"] is True
        assert "Ready,Drained" in _flmctl(daemons, "list", "-n")

        assert [f.result(timeout=60) for f in futures] == [b"2"] * 4  # running tasks finish
        assert all(t.get("retry_count", 0) == 0 for t in _tasks(client, first.id))

        second = flame.create_session("sleeper")
        more = [second.run(b"0.3") for _ in range(8)]
        assert [f.result(timeout=60) for f in more] == [b"0.3"] * 8
        assert _executors_on(client, "n1") <= before, "a drained node got a new executor"

        # Durable: a restarted session manager still has n1 drained.
        daemons.stop("sm")
        daemons.start_session_manager()
        wait_for("n1 drained after restart", lambda: _node(client, "n1").get("drained") is True, timeout=30)

        assert "was undrained" in _flmctl(daemons, "undrain", "-n", "n1")
        assert not _node(client, "n1").get("drained", False)
        assert "Drained" not in _flmctl(daemons, "list", "-n")
        daemons.wait_ready_nodes(2)
        third = flame.create_session("sleeper")
        last = [third.run(b"1.5") for _ in range(4)]

        def serving_on_n1() -> bool:
            executors = client.call({"type": "ListExecutors"})["executors"]
            return any(e["node"] == "n1" and e.get("session_id") == third.id for e in executors)

        wait_for("n1 to serve a session again", serving_on_n1, timeout=30)
        assert [f.result(timeout=60) for f in last] == [b"1.5"] * 4
        stats = _flmctl(daemons, "stats")
        assert "node_undrains_total" in stats
        assert "tasks_created_total" in stats  # counters restart with the daemon


def test_sigterm_on_an_executor_manager_loses_no_task(daemons: Daemons) -> None:
    """SIGTERM drains: the tasks running on n1 finish there, the ones queued for it go back
    unstarted, the node says goodbye and exits 0; every task succeeds with no retry counted."""
    flame = _start(daemons)
    with daemons.client() as client:
        session = flame.create_session("sleeper")
        futures = [session.run(b"1.5") for _ in range(10)]
        wait_for("a task running on n1", lambda: _running_on(client, session.id, "n1"), timeout=60)
        os.kill(daemons.procs["n1"].pid, 15)
        assert daemons.procs["n1"].wait(60) == 0
        assert [f.result(timeout=90) for f in futures] == [b"1.5"] * 10
        tasks = _tasks(client, session.id)
        assert all(t["state"] == "Succeed" for t in tasks)
        assert [t["id"] for t in tasks if t.get("retry_count", 0)] == [], "a drain counted a retry"
    log = daemons.log("n1")
    assert "draining on SIGTERM" in log, log[-2000:]
    assert "drained; stopping" in log, log[-2000:]


def _running_on(client: RawClient, session_id: str, node: str) -> bool:
    on_node = _executors_on(client, node)
    return any(t["state"] == "Running" and t.get("executor_id") in on_node for t in _tasks(client, session_id))
