"""The README's opening Runner example runs as printed, twice in a row, against a real cluster
(its first five minutes: paste after `flamed cluster`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.daemons import REPO, Daemons
from tests.integration.test_readme import block_with

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_readme_runner_example_runs_twice(runner_cluster: Daemons) -> None:
    """Breaks if the first example a newcomer meets fails, or fails when run again (the Runner
    must clean up its application so the same name can be used again)."""
    work = runner_cluster.dir / "quickstart"
    work.mkdir()
    script = block_with("from flamed.runner import Runner")
    for attempt in (1, 2):
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=work,
            env={**os.environ, "PYTHONPATH": str(REPO), "FLAME_ENDPOINT": runner_cluster.frontend},
            check=False,
        )
        assert done.returncode == 0, f"run {attempt}:\n{done.stderr}"
        assert done.stdout.strip() == "285", done.stdout
