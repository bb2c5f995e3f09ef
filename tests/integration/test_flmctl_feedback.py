"""flmctl says what it did, survives a closed pipe and shows one task whole.

Before: register/unregister printed nothing; `flmctl list -s | head` ended in a BrokenPipeError
traceback; `view -s S -t N` showed neither the task's output nor its failure and ignored
`-o json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from flamed.client import Connection
from tests.support.daemons import REPO, Daemons

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def flmctl(d: Daemons, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flamed.cli.flmctl", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "FLAME_ENDPOINT": d.frontend},
        cwd=REPO,
        check=False,
    )


def test_register_update_unregister_say_what_they_did(cluster: Daemons) -> None:
    """Breaks if flmctl register, update or unregister fails or does not say in one line what it did."""
    app = cluster.dir / "app.yaml"
    app.write_text("metadata: {name: hello}\nspec: {command: /bin/true}\n")
    done = flmctl(cluster, "register", "-f", str(app))
    assert (done.returncode, done.stdout) == (0, "Application hello was registered.\n"), done
    done = flmctl(cluster, "update", "-a", str(app))
    assert (done.returncode, done.stdout) == (0, "Application hello was updated (version 2).\n"), done
    done = flmctl(cluster, "unregister", "-a", "hello")
    assert (done.returncode, done.stdout) == (0, "Application hello was unregistered.\n"), done


def test_a_closed_pipe_is_not_an_error(cluster: Daemons) -> None:
    """`flmctl list -s | head -1`: the reader is gone before flmctl writes (here: a pipe whose
    read end is closed already, so the write fails for sure); no traceback, exit 0."""
    with Connection(cluster.frontend) as conn:
        conn.create_session("flmping")
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "flamed.cli.flmctl", "list", "-s"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            env={**os.environ, "FLAME_ENDPOINT": cluster.frontend},
            cwd=REPO,
            check=False,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr, done.stderr
    assert "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 0


def test_view_task_shows_output_failure_and_json(cluster: Daemons) -> None:
    """One task: its output (or failure message), attempt and times; `-o json` all fields."""
    with Connection(cluster.frontend) as conn:
        session = conn.create_session("flmping")
        assert session.run(b"echo me").result(timeout=30) == b"echo me"
    done = flmctl(cluster, "view", "-s", session.id, "-t", "1")
    assert done.returncode == 0, done
    assert "Output:        7 bytes: echo me" in done.stdout, done.stdout
    assert "Attempt:       1 (0 retries)" in done.stdout, done.stdout
    raw = json.loads(flmctl(cluster, "view", "-s", session.id, "-t", "1", "-o", "json").stdout)
    assert raw["id"] == 1
    assert raw["state"] == "Succeed"
    assert raw["application"] == "flmping"
