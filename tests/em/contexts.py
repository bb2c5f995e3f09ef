"""What a fake session manager sends an executor manager in the tests of tests/em: session and
application contexts, task assignments, fresh ids."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from protocol import backend as be
from protocol.types import ResourceRequirement
from tests.support.fake_backend import FakeSessionManager

R = TypeVar("R")

#: the test services of tests/em (probe_service.py)
SERVICES = Path(__file__).parent / "services"


def new_id() -> str:
    """A fresh 12-character id (for sessions and executors)."""
    return uuid.uuid4().hex[:12]


def session(session_id: str, common_data: bytes | None = None) -> be.SessionContext:
    """The context of session `session_id` of application "app"."""
    return be.SessionContext(session_id=session_id, application="app", common_data=common_data)


def flmping_app() -> be.ApplicationContext:
    """The flmping service (flamed.apps.flmping) as an application."""
    return be.ApplicationContext(name="flmping", command="${FLAME_PYTHON}", arguments=["-m", "flamed.apps.flmping"])


def probe_app() -> be.ApplicationContext:
    """tests/em/services/probe_service.py as an application."""
    return be.ApplicationContext(
        name="probe", command="${FLAME_PYTHON}", arguments=[str(SERVICES / "probe_service.py")]
    )


def tasks(inputs: Sequence[bytes | None], first: int = 1) -> list[be.TaskAssignment]:
    """Assignments (attempt 1) of tasks `first`, `first + 1`, ... with these inputs."""
    return [be.TaskAssignment(task_id=first + i, attempt=1, input=data) for i, data in enumerate(inputs)]


RESREQ = ResourceRequirement(cpu=1, memory=1 << 20)


def completed(reports: list[be.ExecutorReport]) -> list[be.TaskCompleted]:
    """The TaskCompleted reports among `reports`."""
    return [r for r in reports if isinstance(r, be.TaskCompleted)]


def of_type(kind: type[R], reports: list[be.ExecutorReport]) -> list[R]:
    """The reports of type `kind` among `reports`."""
    return [r for r in reports if isinstance(r, kind)]


def bind(sm: FakeSessionManager, executor_id: str, session_id: str, app: be.ApplicationContext, **kw: object) -> None:
    """Create and bind `executor_id` to `session_id` of `app`; wait until it is bound or failed."""
    sm.command(
        be.CreateExecutor(executor_id=executor_id, resreq=RESREQ),
        be.BindExecutor(executor_id=executor_id, session=session(session_id, **kw), application=app),  # type: ignore[arg-type]  # the tests' SessionContext keywords, passed on untyped
    )
    sm.wait_reports("ExecutorBound", lambda rs: of_type(be.ExecutorBound, rs) or of_type(be.ExecutorBindFailed, rs))
