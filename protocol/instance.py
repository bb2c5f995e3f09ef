"""Instance messages: executor manager <-> application instance process.

The executor manager binds one ROUTER on an `ipc://` endpoint in its runtime directory and
starts each instance with `FLAME_INSTANCE_ENDPOINT` (that endpoint) and `FLAME_EXECUTOR_ID`.
The instance connects a DEALER whose routing id is its executor id and says `InstanceReady`.
Then: `EnterSession` -> `SessionEntered`; any number of `InvokeTasks` -> `TaskResults` (tasks
run one at a time in order; results may be batched); `LeaveSession` -> `SessionLeft`, after
which the instance exits.
"""

from __future__ import annotations

import msgspec

from protocol.backend import ApplicationContext, SessionContext, TaskAssignment


class Message(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True):
    pass


class TaskOutcome(msgspec.Struct, kw_only=True, omit_defaults=True):
    task_id: int
    attempt: int
    ok: bool
    output: bytes | None = None
    message: str | None = None


# instance -> executor manager


class InstanceReady(Message):
    executor_id: str
    protocol_version: int
    pid: int


class SessionEntered(Message):
    ok: bool
    message: str | None = None


class TaskResults(Message):
    results: list[TaskOutcome]


class SessionLeft(Message):
    ok: bool
    message: str | None = None


# executor manager -> instance


class EnterSession(Message):
    session: SessionContext
    application: ApplicationContext


class InvokeTasks(Message):
    tasks: list[TaskAssignment]


class LeaveSession(Message):
    pass


InstanceMessage = InstanceReady | SessionEntered | TaskResults | SessionLeft
InstanceCommand = EnterSession | InvokeTasks | LeaveSession
