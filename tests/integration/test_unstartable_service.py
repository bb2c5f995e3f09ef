"""A service that cannot start fails its client's tasks with the reason (no silent hang).

Real session manager and executor manager. Before, `run(...).result(timeout=90)` ended in a
bare `TimeoutError` while the reason sat in the daemon log; now the task fails once the
session's bind failures reach `session_bind_retry_limit` (5), with the bind failure's text.
"""

from __future__ import annotations

import sys
import time

import pytest

from flamed.client import ApplicationAttributes, Connection, FlameError
from tests.integration.daemons import SERVICES
from tests.support.daemons import Daemons

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def run_one(d: Daemons, command: str, arguments: list[str]) -> tuple[FlameError, float]:
    with Connection(d.frontend, timeout=20.0) as conn:
        conn.register_application("broken", ApplicationAttributes(command=command, arguments=arguments))
        session = conn.create_session("broken")
        started = time.monotonic()
        with pytest.raises(FlameError) as raised:
            session.run(b"x").result(timeout=30)
        return raised.value, time.monotonic() - started


def test_a_command_that_does_not_exist_fails_the_task_with_that_command(cluster: Daemons) -> None:
    """The future raises FlameError naming the command within 30 s (it used to hang for ever)."""
    error, took = run_one(cluster, "/nonexistent/bin/my-service", [])
    assert "/nonexistent/bin/my-service" in error.message, error.message
    assert "failed attempts" in error.message, error.message
    print(f"failed after {took:.2f}s: {error.message}")


def test_a_service_whose_session_enter_raises_fails_the_task_with_its_error(cluster: Daemons) -> None:
    """`on_session_enter` raising reaches the client with the exception's text."""
    error, took = run_one(cluster, sys.executable, [str(SERVICES / "refuses_session.py")])
    assert "the model file is missing" in error.message, error.message
    print(f"failed after {took:.2f}s: {error.message}")
