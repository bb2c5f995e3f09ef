"""The executor-manager tests' fixtures (`workdir`, `sm`, `em`) are the suite's, in
tests/support/fixtures.py; their helpers are in tests/em/contexts.py. The names below stay
importable from here for older imports."""

from __future__ import annotations

from tests.em.contexts import RESREQ, SERVICES, flmping_app, new_id, probe_app, session, tasks
from tests.support.daemons import ExecutorManagerProcess, instance_pids
from tests.support.fake_backend import FakeSessionManager
from tests.support.waiting import wait_for

__all__ = [
    "RESREQ",
    "SERVICES",
    "ExecutorManagerProcess",
    "FakeSessionManager",
    "flmping_app",
    "instance_pids",
    "new_id",
    "probe_app",
    "session",
    "tasks",
    "wait_for",
]
