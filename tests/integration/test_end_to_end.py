"""Real work through real daemons: the SDK, a FlameService written here, two nodes, the CLIs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from tests.integration.daemons import SERVICES
from tests.support.daemons import REPO, Daemons, processes_with
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def register_recorder(flame: ModuleType, journal: Path, **attrs: object) -> None:
    client = flame
    client.register_application(
        "recorder",
        client.ApplicationAttributes(
            command=sys.executable,
            arguments=[str(SERVICES / "recorder.py"), str(journal)],
            environments={"PYTHONPATH": str(REPO)},
            **attrs,
        ),
    )


def test_sdk_runs_a_service_written_here(cluster: Daemons, monkeypatch: pytest.MonkeyPatch) -> None:
    """Breaks if the SDK cannot register an application, run tasks through a service with common data, report a
    failed task's message, close the session (the instance leaves), and unregister."""
    from flamed import client as flame

    monkeypatch.setenv("FLAME_ENDPOINT", cluster.frontend)
    journal = cluster.dir / "journal"
    flame.connect(cluster.frontend)
    register_recorder(flame, journal, max_instances=1, delay_release=0.5)
    session = flame.create_session("recorder", common_data=b"common")
    futures = [session.run(str(i).encode()) for i in range(100)]
    assert [f.result(timeout=60) for f in futures] == [b"common:%d" % i for i in range(100)]

    failing = session.run(b"fail")
    with pytest.raises(flame.FlameError) as caught:
        failing.result(timeout=60)
    assert "the service refused input 'fail'" in caught.value.message
    task = session.get_task(101)
    assert task.state == flame.TaskState.Failed
    assert any("the service refused input 'fail'" in (e.message or "") for e in task.events)
    assert session.invoke(b"last") == b"common:last"

    session.close()
    assert flame.get_session(session.id).state == flame.SessionState.Closed

    def left() -> str | None:
        text = _read(journal)
        return text if "leave" in text else None

    lines = wait_for("the instance to leave the session", left)
    assert lines.splitlines() == [f"enter {session.id}", "leave"]
    flame.unregister_application("recorder")
    assert flame.get_application("recorder") is None


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_a_task_whose_instance_dies_fails_with_a_message_that_says_so(
    cluster: Daemons, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Breaks if a task whose instance exits hangs, or fails without saying the instance exited."""
    from flamed import client as flame

    flame.connect(cluster.frontend)
    register_recorder(flame, cluster.dir / "journal")
    session = flame.create_session("recorder", common_data=b"c")
    doomed = session.run(b"die")
    fine = session.run(b"ok")
    assert fine.result(timeout=60) == b"c:ok"
    with pytest.raises(flame.FlameError) as caught:
        doomed.result(timeout=90)
    assert "exit" in caught.value.message.lower(), caught.value.message
    session.close()


def test_two_executor_managers_share_one_session(daemons: Daemons) -> None:
    """Breaks if one session's tasks do not spread over two nodes, or some do not succeed."""
    from flamed import client as flame

    daemons.start_session_manager()
    daemons.start_executor_manager("alpha", 1)
    daemons.start_executor_manager("beta", 1)
    nodes = daemons.wait_ready_nodes(2)
    assert sorted(n["name"] for n in nodes) == ["alpha", "beta"]
    flame.connect(daemons.frontend)
    session = flame.create_session("flmping")
    futures = [session.run(b'{"duration": 20}') for _ in range(40)]
    seen: Counter[str] = Counter()

    def both_nodes_bound() -> bool:
        for executor in flame.list_executors():
            if executor.session_id == session.id:
                seen[executor.node] += 1
        return len(seen) == 2

    wait_for("executors of the session on both nodes", both_nodes_bound, timeout=60)
    assert all(f.result(timeout=60) for f in futures)
    assert [t.state for t in session.list_tasks()] == [flame.TaskState.Succeed] * 40
    session.close()


def test_flamed_cluster_runs_flmping_and_stops_cleanly_on_sigterm(daemons: Daemons) -> None:
    """Breaks if `flamed cluster` cannot run flmping, flmctl cannot list its nodes, or it does not stop cleanly
    on SIGTERM."""
    proc = daemons.spawn(
        "cluster",
        "cluster",
        "--frontend",
        daemons.frontend,
        "--backend",
        daemons.backend,
        "--executors",
        "2",
        "--slots",
        "2",
        "--state-dir",
        str(daemons.dir / "state"),
        "--config",
        str(daemons.config),
    )
    env = {**os.environ, "FLAME_ENDPOINT": daemons.frontend}
    ping = subprocess.run(
        [sys.executable, "-m", "flamed.cli.flmping", "-t", "200"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert ping.returncode == 0, ping.stdout[-2000:] + ping.stderr[-2000:]
    assert "<200> tasks was completed" in ping.stdout
    listed = subprocess.run(
        [sys.executable, "-m", "flamed.cli.flmctl", "list", "-n"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed
    assert "Ready" in listed.stdout, listed
    assert len(processes_with(daemons.marker)) >= 3  # supervisor, session manager, executor managers
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    wait_for("every cluster process to exit", lambda: not processes_with(daemons.marker), timeout=15)
