"""Fixtures for the Runner tests: a real cluster (session manager, object cache, one executor
manager with 2 slots, tests/integration/daemons.py) and a project directory the Runner
packages, holding `tasks.py` (the code the tests call remotely, imported here by reference as
a user's module would be)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from flamed import client as flame
from tests.cache.conftest import wait_cache_ready
from tests.integration.daemons import Daemons, wait_for

TASKS = """
import time


def square(x):
    return x * x


def add(a, b=0):
    return a + b


def total(values):
    return sum(values)


def big(n):
    return b"x" * n


def length(data):
    return len(data)


def _inner(x):
    raise ValueError(f"bad value {x}")


def fails(x):
    return _inner(x)


def needs_missing_module():
    import flame_no_such_module  # noqa: F401

    return 1


def uses_tinydep():
    import tinydep

    return tinydep.VALUE


def nested(n):
    # a task that is itself a Runner client (its own application, from inside the cluster)
    from flamed.runner import Runner

    with Runner("inner") as inner:
        return inner.service(abs)(-n).get() + 1


def slow(seconds, value):
    time.sleep(seconds)
    return value
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A project directory as the working directory, its `tasks` module imported."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "tasks.py").write_text(TASKS)
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    sys.modules.pop("tasks", None)
    yield importlib.import_module("tasks")
    sys.modules.pop("tasks", None)


@pytest.fixture
def runner_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemons]:
    """A cluster with its object cache; pip on the executor manager may not reach an index
    (PIP_NO_INDEX), so installs work only from what the node and the package have."""
    yield from cluster_with_cache(monkeypatch, slots=2)


def cluster_with_cache(monkeypatch: pytest.MonkeyPatch, slots: int) -> Iterator[Daemons]:
    """`runner_cluster`'s body, with one executor manager of `slots` slots."""
    d = Daemons()
    d.env["PIP_NO_INDEX"] = "1"
    monkeypatch.delenv("FLAME_CACHE_ENDPOINT", raising=False)
    try:
        d.start_session_manager()
        d.start_object_cache()
        d.start_executor_manager("n1", slots)
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
