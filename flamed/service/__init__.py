"""The service API: write a `FlameService`, call `run(service)` (flamepy-compatible names).

An application instance is started by an executor manager with `FLAME_INSTANCE_ENDPOINT`,
`FLAME_EXECUTOR_ID` and `FLAME_INSTANCE_TOKEN` in its environment; `run` connects there and
serves the instance protocol (protocol/instance.py) until the executor manager asks it to leave
the session.

`Session` and `FlameInstance` are flamepy's agent API (agent.py): Python objects in and out, a
shared context in the object cache.
"""

from flamed.service.agent import FlameInstance, Session
from flamed.service.runner import run
from flamed.service.types import (
    ApplicationContext,
    CommonData,
    FlameService,
    SessionContext,
    TaskContext,
    TaskInput,
    TaskOutput,
)

__all__ = [
    "ApplicationContext",
    "CommonData",
    "FlameInstance",
    "FlameService",
    "Session",
    "SessionContext",
    "TaskContext",
    "TaskInput",
    "TaskOutput",
    "run",
]
