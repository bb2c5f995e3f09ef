"""The suite's shared fixtures, loaded for every test by tests/conftest.py (`pytest_plugins`).

Each fixture name is defined once in the whole suite and always means the same type
(tests/test_suite_rules.py checks it):

- `daemons`: a `Daemons` with nothing started; afterwards every process is stopped and none may
  be left behind.
- `cluster`: `daemons` with a session manager and one executor manager (n1, 2 slots), Ready.
- `journal_cluster`: the recovery scenarios' `Cluster` (small timeouts, the journal
  application), a session manager and no node yet.
- `workdir`, `sm`, `em`: a short temporary directory, a fake session manager bound in it, and
  a real executor manager connected to that fake (tests/em).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.recovery.cluster import Cluster
from tests.support.daemons import Daemons, ExecutorManagerProcess, instance_pids
from tests.support.fake_backend import FakeSessionManager
from tests.support.waiting import wait_for


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    """Daemons of one test. At the end every process is stopped and none may be left behind."""
    d = Daemons()
    try:
        yield d
        d.stop_all()
        try:
            wait_for("every test process to exit", lambda: not d.leftovers(), timeout=10)
        except AssertionError:
            raise AssertionError(f"processes left behind: {d.leftovers()}") from None
    finally:
        print(d.dump_logs())
        d.cleanup()


@pytest.fixture
def cluster(daemons: Daemons) -> Daemons:
    """A session manager with one executor manager (node n1, 2 slots), both Ready."""
    daemons.start_session_manager()
    daemons.start_executor_manager("n1", 2)
    daemons.wait_ready_nodes(1)
    return daemons


@pytest.fixture
def journal_cluster(daemons: Daemons) -> Iterator[Cluster]:
    """The recovery scenarios' cluster (journal application, small timeouts), no node yet."""
    c = Cluster(daemons)
    c.start_sm()
    c.register_app()
    yield c
    c.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A temporary directory; afterwards any instance started under it is killed."""
    # Short, so that ipc:// paths stay well under the 107-byte unix socket limit.
    path = Path(tempfile.mkdtemp(prefix="flem-", dir="/tmp"))
    yield path
    for pid in instance_pids(str(path).encode()):
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sm(workdir: Path) -> Iterator[FakeSessionManager]:
    """A fake session manager bound at `ipc://<workdir>/backend.sock`."""
    fake = FakeSessionManager(f"ipc://{workdir}/backend.sock")
    yield fake
    fake.close()


@pytest.fixture
def em(workdir: Path, sm: FakeSessionManager) -> Iterator[ExecutorManagerProcess]:
    """A real executor manager (node n1, 2 slots) connected to `sm`; killed afterwards."""
    process = ExecutorManagerProcess(workdir, sm.endpoint)
    yield process
    if process.process.poll() is None:
        process.process.kill()
        process.process.wait(10)
    print(process.log())
