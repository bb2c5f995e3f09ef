"""Task state machine (DESIGN 4).

Pending -> Running on dispatch (each dispatch is a new attempt); Running -> Succeed | Failed on
a completion naming the current attempt; Running -> Pending when the infrastructure lost the
attempt (retry_count += 1) or the executor handed it back unstarted; Running -> Failed when a
retry would pass `task_retry_limit`; Pending -> Cancelled when the session closes; Pending ->
Failed when the session's instances cannot start (its bind failures reached
`session_bind_retry_limit`), so the client learns why instead of waiting for ever.
"""

from __future__ import annotations

import enum

from flamed.core.machines import Machine
from protocol.types import TaskState


class TaskTrigger(enum.StrEnum):
    dispatch = "dispatch"
    succeed = "succeed"
    fail = "fail"
    requeue = "requeue"
    cancel = "cancel"
    bind_failed = "bind_failed"


P, R = TaskState.Pending, TaskState.Running

TASK = Machine[TaskState, TaskTrigger](
    "task",
    {
        (P, TaskTrigger.dispatch): R,
        (P, TaskTrigger.cancel): TaskState.Cancelled,
        (P, TaskTrigger.bind_failed): TaskState.Failed,
        (R, TaskTrigger.succeed): TaskState.Succeed,
        (R, TaskTrigger.fail): TaskState.Failed,
        (R, TaskTrigger.requeue): P,
    },
)
