"""The whole suite's conftest: the shared fixtures of tests/support, and the guard that a test
starting a process carries the `integration` mark (so `-m "not integration"` is a fast lane
that starts none)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.guards import ADVICE, forbid_processes

# pytester: tests/test_suite_rules.py runs a small suite in-process to check the guard below.
pytest_plugins = ["pytester", "tests.support.fixtures"]


@pytest.fixture(autouse=True)
def _processes_need_the_integration_mark(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Outside tests marked `integration`, starting a process raises; an attempt the code under
    test swallowed still fails the test here."""
    if request.node.get_closest_marker("integration") is not None:
        yield
        return
    attempts = forbid_processes(monkeypatch, request.node.nodeid)
    yield
    if attempts:
        pytest.fail(f"{request.node.nodeid} starts a process ({'; '.join(attempts)}): {ADVICE}", pytrace=False)
