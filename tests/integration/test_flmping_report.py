"""flmping tells the truth about failures and shows progress when asked.

Before, a run where most tasks failed printed "<N> tasks was completed" with no count of
failures and exited 1 without saying why.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flamed.client import ApplicationAttributes, Connection
from tests.support.daemons import REPO, Daemons

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def flmping(d: Daemons, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flamed.cli.flmping", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLAME_ENDPOINT": d.frontend},
        cwd=REPO,
        check=False,
    )


def test_failed_tasks_are_counted_and_the_first_reason_given(cluster: Daemons) -> None:
    """Every task of an application that cannot start fails: the last line counts them, stderr
    says how many failed and why, the exit code is 1."""
    with Connection(cluster.frontend) as conn:
        conn.register_application("broken", ApplicationAttributes(command="/nonexistent/bin/ping-service"))
    done = flmping(cluster, "-a", "broken", "-t", "20")
    assert done.returncode == 1, done
    assert "<20> tasks was completed in" in done.stdout, done.stdout
    assert "0 succeeded, 20 failed." in done.stdout, done.stdout
    assert done.stderr.startswith("flmping: error: 20 of 20 tasks failed; the first: "), done.stderr
    assert "/nonexistent/bin/ping-service" in done.stderr


def test_progress_bar_on_request_and_summary_unchanged(cluster: Daemons) -> None:
    """`--progress` draws the bar on stderr even when it is not a terminal; stdout keeps the
    BENCHMARK RESULTS block, and a clean run exits 0."""
    done = flmping(cluster, "-p", "-t", "300", "--progress")
    assert done.returncode == 0, done
    assert "BENCHMARK RESULTS" in done.stdout
    assert "Succeeded:       300/300" in done.stdout
    assert "300/300" in done.stderr, done.stderr
    assert "0 failed" in done.stderr, done.stderr
    quiet = flmping(cluster, "-t", "5")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "", quiet.stderr
