"""`flamed cluster` never hangs: a child that cannot start stops it with the child's reason,
and Ctrl-C / SIGTERM end it at every moment.

Before, a session manager that failed to start (its state dir locked by another one) left the
cluster blocked in a socket send for ever, deaf to Ctrl-C and SIGTERM; only kill -9 ended it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.daemons import Daemons
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def cluster_args(d: Daemons, state: Path, *extra: str) -> list[str]:
    return [
        "cluster",
        "--frontend",
        d.frontend,
        "--backend",
        d.backend,
        "--state-dir",
        str(state),
        "--config",
        str(d.config),
        *extra,
    ]


def test_a_locked_state_dir_stops_the_cluster_with_the_reason(daemons: Daemons) -> None:
    """A second cluster on a state dir another session manager holds exits 1 within seconds and
    names the lock (it used to hang for ever)."""
    daemons.start_session_manager()  # holds <dir>/state
    with daemons.client() as client:
        assert client.call({"type": "Ping"})["type"] == "Pong"
    other = Daemons()
    try:
        proc = other.spawn("cluster", *cluster_args(other, daemons.dir / "state"))
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("flamed cluster hung on a locked state dir") from None
        assert code == 1
        log = other.log("cluster")
        assert "the session manager failed to start" in log, log
        assert "lock" in log.lower(), log
        assert not other.leftovers()
    finally:
        other.cleanup()


def test_an_executor_manager_that_cannot_start_stops_the_cluster(daemons: Daemons) -> None:
    """An executor manager that exits at once (its runtime dir is a file) stops the cluster
    with exit 1 and its reason, instead of being restarted for ever."""
    not_a_dir = daemons.dir / "not-a-dir"
    not_a_dir.write_text("")
    with daemons.config.open("a") as f:
        f.write(f'[executor_manager]\nruntime_dir = "{not_a_dir}"\n')
    proc = daemons.spawn("cluster", *cluster_args(daemons, daemons.dir / "state"))
    assert proc.wait(timeout=40) == 1
    log = daemons.log("cluster")
    assert "failed to start" in log, log
    assert "executor manager" in log, log
    wait_for("no process left", lambda: not daemons.leftovers(), timeout=15)


def test_ctrl_c_twice_ends_it_while_the_session_manager_is_frozen(daemons: Daemons) -> None:
    """With the session manager frozen (SIGSTOP) the first Ctrl-C starts a stop that would wait
    for it; the second kills what is left at once."""
    proc = daemons.spawn("cluster", *cluster_args(daemons, daemons.dir / "state"))
    sm_pid = wait_for("the session manager process", lambda: _child_with(proc.pid, "session-manager"), timeout=20)
    os.kill(sm_pid, signal.SIGSTOP)
    try:
        proc.send_signal(signal.SIGINT)
        wait_for("the stop to begin", lambda: "flamed cluster: stopping" in daemons.log("cluster"), timeout=10)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) in (0, 1)
    finally:
        with contextlib.suppress(ProcessLookupError):  # killed by the second Ctrl-C
            os.kill(sm_pid, signal.SIGCONT)
    wait_for("no process left", lambda: not daemons.leftovers(), timeout=15)


def _child_with(parent: int, word: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(") ", 1)[1].split()[1])
        if ppid == parent and word.encode() in cmdline:
            return int(entry.name)
    return None
