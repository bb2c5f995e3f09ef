"""The README's Python examples run as printed, twice in a row, against a real cluster.

Before, the SDK example worked once: the second run died with a 15-line traceback
(`application 'echo' already exists`), and the raw-protocol example reused a session id.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemons import REPO, Daemons

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

README_ENDPOINT = "tcp://127.0.0.1:8080"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.DOTALL)


def block_with(marker: str) -> str:
    found = [b for b in python_blocks() if marker in b]
    assert len(found) == 1, f"README: expected one python block with {marker!r}, found {len(found)}"
    return found[0]


def run(script: str, cwd: Path, endpoint: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script.replace(README_ENDPOINT, endpoint)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )


def test_sdk_example_runs_twice(cluster: Daemons) -> None:
    """Service file + client script from the README: both runs print b'hello world'."""
    work = cluster.dir / "readme"
    work.mkdir()
    (work / "echo_service.py").write_text(block_with("class Echo(FlameService)"))
    client = block_with('flame.create_session("echo"')
    for attempt in (1, 2):
        done = run(client, work, cluster.frontend)
        assert done.returncode == 0, f"run {attempt}:\n{done.stderr}"
        assert "b'hello world'" in done.stdout, done.stdout


def test_raw_protocol_example_runs_twice(cluster: Daemons) -> None:
    """The plain-pyzmq example: each run creates its own session and its task succeeds."""
    for attempt in (1, 2):
        done = run(block_with("msgspec.msgpack.encode(msg)"), cluster.dir, cluster.frontend)
        assert done.returncode == 0, f"run {attempt}:\n{done.stderr}"
        assert done.stdout.startswith("Succeed"), done.stdout
