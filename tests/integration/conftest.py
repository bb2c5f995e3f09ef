from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.daemons import Daemons, wait_for


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
