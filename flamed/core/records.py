"""Durable records: every change to the session manager's state is one of these.

No part of the core mutates state directly: it builds a record and commits it
(`Turn.commit`, which calls `ClusterState.apply(record)`), and the same record goes to the
write-ahead log. Replaying the log through `apply` therefore rebuilds exactly the state that was
acknowledged (invariant I8). Records are batched where tasks are concerned (one record for
many created, dispatched or finished tasks) so the log keeps up with the task rate.

Evolution rules are the wire protocol's: new fields only with defaults, never retype a field.
"""

from __future__ import annotations

import msgspec

from protocol.types import Application, Event, NodeInfo, ResourceRequirement, SessionSpec, TaskState


class Record(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True, array_like=True):
    time: int  # Unix ms, for the entity's timestamps and events


class ApplicationSaved(Record):
    application: Application


class ApplicationRemoved(Record):
    name: str


class SessionCreated(Record):
    session_id: str
    spec: SessionSpec


class SessionClosed(Record):
    session_id: str


class SessionDeleted(Record):
    session_id: str


class SessionEventRecorded(Record):
    session_id: str
    event: Event


class TasksCreated(Record):
    session_id: str
    first_id: int
    inputs: list[bytes | None]
    #: the client's idempotency key for this batch ("" = none): a repeat creates nothing
    key: str = ""


class PendingTasksFailed(Record):
    """The session's instances cannot start (its bind failures reached the session's bind
    retry limit): every Pending task fails with `reason`, and no executor is bound to the
    session again until new tasks arrive. A new record kind: older logs replay unchanged."""

    session_id: str
    reason: str


class TasksDispatched(Record):
    """Pending -> Running on `executor_id`; each task's attempt goes up by one."""

    session_id: str
    executor_id: str
    task_ids: list[int]


class TaskFinish(msgspec.Struct, array_like=True, omit_defaults=True):
    task_id: int
    state: TaskState
    output: bytes | None = None
    message: str | None = None


class TasksFinished(Record):
    """Running -> Succeed | Failed."""

    session_id: str
    tasks: list[TaskFinish]


class TasksRequeued(Record):
    """Running -> Pending. `count_retry`: an infrastructure loss (retry_count += 1); otherwise
    the executor handed the task back unstarted."""

    session_id: str
    task_ids: list[int]
    count_retry: bool
    reason: str = ""


class ExecutorCreated(Record):
    executor_id: str
    node: str
    resreq: ResourceRequirement
    session_id: str | None = None  # the session it is created for (pipelined), if any


class ExecutorChanged(Record):
    """A transition of the executor table; `session_id` is set by `bind`."""

    executor_id: str
    trigger: str
    session_id: str | None = None


class ExecutorRemoved(Record):
    executor_id: str


class NodeRegistered(Record):
    info: NodeInfo
    incarnation: str
    epoch: int
    #: hash of the executor manager's secret (`flamed.core.identity`); "" in logs written before
    #: it existed, or for an executor manager that sent none
    secret_hash: str = ""


class NodeChanged(Record):
    name: str
    trigger: str
    reason: str = ""


class NodeRemoved(Record):
    name: str


class NodeDrainChanged(Record):
    """An operator cordoned (`drained`) or uncordoned a node (`flmctl drain/undrain`). A new
    record kind: logs written before it existed replay unchanged."""

    name: str
    drained: bool
    reason: str = ""


class SessionsExpired(Record):
    """Retention (`retention.py`) deleted these closed sessions, with their tasks, because of
    `reason` (the config key: "closed_session_ttl" or "max_finished_tasks"). A read of one of
    them says so afterwards (`ClusterState.expired_sessions`). A new record kind: older logs
    replay unchanged."""

    session_ids: list[str]
    reason: str


class TasksExpired(Record):
    """Retention deleted these finished tasks of an open session (`reason`: the config key).
    `ranges` are inclusive [first, last] task ids; the session's counts keep their totals.
    A new record kind: older logs replay unchanged."""

    session_id: str
    ranges: list[tuple[int, int]]
    reason: str


AnyRecord = (
    ApplicationSaved
    | ApplicationRemoved
    | SessionCreated
    | SessionClosed
    | SessionDeleted
    | SessionEventRecorded
    | TasksCreated
    | PendingTasksFailed
    | TasksDispatched
    | TasksFinished
    | TasksRequeued
    | ExecutorCreated
    | ExecutorChanged
    | ExecutorRemoved
    | NodeRegistered
    | NodeChanged
    | NodeRemoved
    | NodeDrainChanged
    | SessionsExpired
    | TasksExpired
)
