"""The integration tests' services (tests/integration/services). The process factories and
`wait_for` are the suite's, in tests/support; the names below stay importable from here for
older imports."""

from __future__ import annotations

from pathlib import Path

from tests.support.daemons import REPO, Daemons, RawClient, free_port, processes_with
from tests.support.waiting import wait_for

__all__ = ["REPO", "SERVICES", "Daemons", "RawClient", "free_port", "processes_with", "wait_for"]

#: the test services of tests/integration (recorder.py, refuses_session.py)
SERVICES = Path(__file__).resolve().parent / "services"
