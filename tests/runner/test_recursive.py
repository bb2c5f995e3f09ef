"""A call that waits for another call of its own session (a recursive service), with real
processes: the inner call must not be queued behind the outer one on the outer's executor."""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flamed import client as flame
from flamed.runner import Runner, SessionContext
from tests.cache.conftest import wait_cache_ready
from tests.integration.daemons import Daemons, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

RECURSIVE = """
from flamed.runner import Runner


class Recursive:
    _session_context = None

    def compute(self, depth):
        if depth <= 0:
            return 1
        ctx = self._session_context
        with Runner(ctx.application_name) as rr:  # the application exists: reused, not closed
            return rr.service(type(self), autoscale=True).compute(depth - 1).get() * 2

    def fan_out(self, count):
        ctx = self._session_context
        with Runner(ctx.application_name) as rr:
            service = rr.service(type(self), autoscale=True)
            return sum(f.get() for f in [service.compute(0) for _ in range(count)])
"""


@pytest.fixture
def recursive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A project directory holding `recursive.py`, as the working directory, imported."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "recursive.py").write_text(RECURSIVE)
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    sys.modules.pop("recursive", None)
    yield importlib.import_module("recursive")
    sys.modules.pop("recursive", None)


@pytest.fixture
def cluster3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemons]:
    """A cluster with its object cache and one executor manager with 3 slots (a depth-2
    recursion holds three executors at once)."""
    d = Daemons()
    d.env["PIP_NO_INDEX"] = "1"
    monkeypatch.delenv("FLAME_CACHE_ENDPOINT", raising=False)
    try:
        d.start_session_manager()
        d.start_object_cache()
        d.start_executor_manager("n1", 3)
        d.wait_ready_nodes(1)
        wait_cache_ready(d)
        flame.connect(d.frontend)
        yield d
        flame.disconnect()
        d.stop_all()
        wait_for("every test process to exit", lambda: not d.leftovers(), timeout=10)
    finally:
        print(d.dump_logs())
        d.cleanup()


def test_recursive_call_into_its_own_session(cluster3: Daemons, recursive: ModuleType) -> None:
    """Flame's e2e test_runner_recursive_same_session: a call that makes a call of its own
    session and waits for it, two levels deep, then a call that fans out calls of its own
    session and waits for all. Breaks (times out) if the inner call is dispatched ahead into
    the window of the executor whose running call waits for it."""
    suffix = uuid.uuid4().hex[:8]
    app, session_id = f"rec-{suffix}", f"rec-session-{suffix}"

    class Service(recursive.Recursive):  # type: ignore[name-defined,misc]
        _session_context = SessionContext(session_id=session_id, application_name=app)

    with Runner(app) as rr:
        service: Any = rr.service(Service, autoscale=True)
        assert service._session.id == session_id
        assert service.compute(0).get() == 1
        assert service.compute(1).get() == 2
        assert service.compute(2).get() == 4
        assert service.fan_out(5).get() == 5
        tasks = list(service._session.list_tasks())
        assert [t.state for t in tasks] == [flame.TaskState.Succeed] * (1 + 2 + 3 + 6)
