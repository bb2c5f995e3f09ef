"""`flamed status` tells an operator what the session manager is and holds, through the SDK.

Before, it printed only storage facts (no version, uptime, nodes or sessions) from a message it
built by hand as a dict, and a wrong endpoint waited out its timeout.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flamed import __version__
from flamed.cli.flamed import status_lines
from flamed.client import Connection
from tests.support.daemons import REPO, Daemons, free_port

pytestmark = pytest.mark.timeout(60)


def flamed(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flamed", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=env,
        check=False,
    )


@pytest.mark.integration
def test_status_shows_version_uptime_nodes_sessions_and_storage(daemons: Daemons) -> None:
    """A live cluster: the header has the version and uptime; nodes, sessions and the state
    directory follow; --json carries the same numbers."""
    daemons.start_session_manager()
    daemons.start_executor_manager("n1", 2)
    daemons.wait_ready_nodes(1)
    with Connection(daemons.frontend) as conn:
        conn.create_session("flmping").close()
        conn.create_session("flmping")
    done = flamed("status", "--endpoint", daemons.frontend)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"flamed {__version__}" in out, out
    assert ", up " in out, out
    assert "1 Ready" in out, out
    assert "1 open, 1 closed" in out, out
    assert str(daemons.dir / "state") in out, out
    raw = json.loads(flamed("status", "--endpoint", daemons.frontend, "--json").stdout)
    assert raw["stats"]["nodes_ready"] == 1
    assert raw["stats"]["sessions_open"] == 1
    assert raw["stats"]["uptime_seconds"] > 0
    assert raw["info"]["server_version"] == __version__


@pytest.mark.integration
def test_status_with_nothing_listening_fails_in_one_line() -> None:
    """Exit 1 with one line naming the endpoint, no traceback."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    done = flamed("status", "--endpoint", endpoint)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"nothing answers at {endpoint}" in done.stderr, done.stderr


def test_status_lines_without_storage_say_memory_only() -> None:
    """A session manager without a state directory (tests, embedding) is said to be one."""
    stats = {"nodes_ready": 2.0, "uptime_seconds": 3725.0, "sessions_open": 1.0, "tasks_succeed": 1234.0}
    lines = status_lines("tcp://h:8080", "0.1.0", "flame", stats, {})
    assert lines[0] == "session manager at tcp://h:8080: flamed 0.1.0, cluster flame, up 1h 2m"
    assert any("2 Ready" in line for line in lines)
    assert any("1,234 Succeed" in line for line in lines)
    assert any("memory only" in line for line in lines)
