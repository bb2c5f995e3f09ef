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
from tests.integration.daemons import Daemons
from tests.runner.conftest import cluster_with_cache

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
    yield from cluster_with_cache(monkeypatch, slots=3)


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
