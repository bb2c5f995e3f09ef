from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.daemons import Daemons, wait_for


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    """Real daemons of one test; all stopped at the end, none left behind."""
    d = Daemons()
    try:
        yield d
        d.stop_all()
        wait_for("every test process to exit", lambda: not d.leftovers(), timeout=10)
    finally:
        print(d.dump_logs())
        d.cleanup()
