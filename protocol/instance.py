"""Instance messages: executor manager <-> application instance process.

The executor manager binds one ROUTER on an `ipc://` endpoint in its runtime directory and
starts each instance with `FLAME_INSTANCE_ENDPOINT` (that endpoint), `FLAME_EXECUTOR_ID` and
`FLAME_INSTANCE_TOKEN`, an unguessable token new at every start. The instance connects a DEALER
whose routing id is that token (not the executor id, which other tenants can learn) and says
`InstanceReady` with its executor id and pid. Then: `EnterSession` -> `SessionEntered`; any
number of `InvokeTasks` -> `TaskResults` (tasks run one at a time in order; results may be
batched, each task's result once); `LeaveSession` -> `SessionLeft`, after which the instance
exits.

A running task that waits for another task of its own session (a recursive service) sends
`TaskWaiting` (after the results it holds), and waits for `TasksWithdrawn`: the executor
manager has handed the tasks queued behind it back to the session manager, so the instance
drops the tasks it holds but has not started (all `InvokeTasks` before `TasksWithdrawn`), and
gets no more until the waiting task's result is sent. Without it the task waited for could be
queued behind the task that waits for it.

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


class TaskWaiting(Message):
    """The running task (the oldest without a result) waits for a task of its own session:
    hand back what is queued behind it. Once per task, answered by `TasksWithdrawn`."""

    task_id: int
    attempt: int


# executor manager -> instance


class EnterSession(Message):
    session: SessionContext
    application: ApplicationContext


class InvokeTasks(Message):
    tasks: list[TaskAssignment]


class LeaveSession(Message):
    pass


class TasksWithdrawn(Message):
    """The answer to `TaskWaiting`: drop every task held but not started; they were handed
    back. No more tasks come until the waiting task's result."""


InstanceMessage = InstanceReady | SessionEntered | TaskResults | SessionLeft | TaskWaiting
InstanceCommand = EnterSession | InvokeTasks | LeaveSession | TasksWithdrawn
