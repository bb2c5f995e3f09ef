"""Instance messages: executor manager <-> application instance process.

The executor manager binds one ROUTER on an `ipc://` endpoint in its runtime directory and
starts each instance with `FLAME_INSTANCE_ENDPOINT` (that endpoint), `FLAME_EXECUTOR_ID` and
`FLAME_INSTANCE_TOKEN`, an unguessable token new at every start. The instance connects a DEALER
whose routing id is that token (not the executor id, which other tenants can learn) and says
`InstanceReady` with its executor id and pid. Then: `EnterSession` -> `SessionEntered`; any
number of `InvokeTasks` -> `TaskResults` (tasks run one at a time in order; results may be
batched, each task's result once); `LeaveSession` -> `SessionLeft`, after which the instance
exits.

An instance runs a tenant's code and is not trusted. The executor manager accepts a message
only from the process it started (or its process group, as the kernel reports the sender of
each ipc connection) under that instance's token, and only in protocol order. An instance that
sends anything else (a frame that does not decode, a message out of order, a result for a task
it does not hold, another routing id) is killed at once: its bind fails (`ExecutorBindFailed`,
code 19) or its running task fails, with what it did as the reason. After 3 such kills of one
session's instances on a node, binds of that session there fail at once.
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
