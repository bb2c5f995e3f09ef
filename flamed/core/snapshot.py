"""Snapshots of the session manager's durable state: `ClusterState` <-> bytes.

A snapshot holds everything `ClusterState.apply` relies on, so that snapshot + the records
after it rebuild exactly the state that replaying the whole log would (invariant I8):
applications, sessions (spec, state, events, bind failures, the order of the pending queue),
every task (input, output, state, attempt, retry count, unusual events, executor, timestamps),
executors (state, binding, reservation, in-flight tasks in dispatch order), nodes (with the
hash of their executor manager's secret) and the highest epoch handed out. What is derived
(per-state task counts) is recomputed on load; what is volatile (`touched`, links, watches) is
not stored.

Tasks (format 3) are stored as they are held: each session's task columns
(`flamed.core.tasks.TaskTable`) as raw bytes, which decode with a copy per column and no per-task
Python code (except the prefix sum of the output lengths); the columns are normalised on encode
(`TaskTable.to_snap`) so that equal states encode alike. A session's per-state counts are stored
too (retention keeps totals of expired tasks). Formats 1 (one list per field) and 2 (a list of
`TaskEntry` per session) are still read.

Evolution: `FORMAT` goes up when the layout changes incompatibly; new fields only with defaults.
"""

from __future__ import annotations

import collections
from collections import deque

import msgspec

from flamed.core.state import ClusterState, ExecutorEntry, NodeEntry, SessionEntry
from flamed.core.tasks import EXPIRED_TASK, TaskColumnsSnap, TaskEntry, TaskTable
from protocol.errors import FlameBaseError
from protocol.types import (
    Application,
    Event,
    ExecutorState,
    NodeInfo,
    NodeState,
    ResourceRequirement,
    SessionSpec,
    SessionState,
    TaskState,
)

FORMAT = 3
#: Formats this version reads.
READABLE = (1, 2, 3)

#: Column codes of task states (small ints encode faster than the enum's strings).
_STATES = list(TaskState)
_STATE_CODE = {state: index for index, state in enumerate(_STATES)}
#: State code of a slot whose task expired under retention (its other columns are empty).
_EXPIRED = 255


class TaskColumns(msgspec.Struct, array_like=True, kw_only=True):
    """Format 1: the tasks of one session; task id N is at index N-1 of every list."""

    state: list[int]
    input: list[bytes | None]
    output: list[bytes | None]
    creation_time: list[int]
    start_time: list[int | None]
    completion_time: list[int | None]
    attempt: list[int]
    retry_count: list[int]
    executor_id: list[str | None]
    message: list[str | None]
    #: Only tasks with unusual events (retries): task id -> events.
    events: dict[int, list[Event]]


class SessionSnap(msgspec.Struct, array_like=True, kw_only=True):
    id: str
    spec: SessionSpec
    state: SessionState
    creation_time: int
    completion_time: int | None
    events: list[Event]
    bind_failures: int
    pending: list[int]
    #: format 1 only (format 2: None, the tasks are in `entries`)
    tasks: TaskColumns | None
    #: `CreateTasks` keys: key -> (first task id, number of tasks); absent in older snapshots
    batches: dict[str, tuple[int, int]] = {}
    #: Pending tasks failed at the bind retry limit, no binds until new tasks; absent in older snapshots
    bind_paused: bool = False
    #: retention: tasks cut off the front (ids 1..base), tasks expired in all, last activity
    base: int = 0
    expired_tasks: int = 0
    last_active: int = 0
    #: tasks per state since the session began (expired ones too); empty in older snapshots
    counts: dict[TaskState, int] = {}
    #: format 2: the tasks, task id N at index N-1-`base` (id 0: expired under retention)
    entries: list[TaskEntry] = []
    #: format 3: the tasks base+1.. in columns
    columns: TaskColumnsSnap | None = None


class ExecutorSnap(msgspec.Struct, array_like=True, kw_only=True):
    id: str
    node: str
    resreq: ResourceRequirement
    state: ExecutorState
    session_id: str | None
    reserved_for: str | None
    #: In-flight tasks as [task id, attempt] pairs, in dispatch order.
    tasks: list[tuple[int, int]]
    creation_time: int


class NodeSnap(msgspec.Struct, array_like=True, kw_only=True):
    info: NodeInfo
    state: NodeState
    incarnation: str
    epoch: int
    registration_time: int
    drained: bool
    #: absent in older snapshots (nodes registered before secrets existed)
    secret_hash: str = ""


class StateSnapshot(msgspec.Struct, array_like=True, kw_only=True):
    format: int
    applications: list[Application]
    sessions: list[SessionSnap]
    executors: list[ExecutorSnap]
    nodes: list[NodeSnap]
    max_epoch: int
    records_applied: int
    #: sessions retention deleted, oldest first: [id, reason, Unix ms]; absent in older snapshots
    expired_sessions: list[tuple[str, str, int]] = []
    #: what sessions no longer held add to the totals (`ClusterState.gone`); absent in older snapshots
    gone: dict[str, int] = {}


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StateSnapshot)


class SnapshotFormatError(FlameBaseError, ValueError):
    """The bytes are not a snapshot this version can read; the message says why."""


# ------------------------------------------------------------------------------- encode


def _session(session: SessionEntry) -> SessionSnap:
    return SessionSnap(
        id=session.id,
        spec=session.spec,
        state=session.state,
        creation_time=session.creation_time,
        completion_time=session.completion_time,
        events=list(session.events),
        bind_failures=session.bind_failures,
        pending=list(session.pending),
        tasks=None,
        batches=dict(session.batches),
        bind_paused=session.bind_paused,
        base=session.base,
        expired_tasks=session.expired_tasks,
        counts=dict(session.counts),
        columns=session.tasks.to_snap(session.base),
        last_active=session.last_active,
    )


def to_snapshot(state: ClusterState) -> StateSnapshot:
    """The durable part of `state` as plain structs (also the canonical form for comparisons)."""
    return StateSnapshot(
        format=FORMAT,
        applications=list(state.applications.values()),
        sessions=[_session(s) for s in state.sessions.values()],
        executors=[
            ExecutorSnap(
                id=e.id,
                node=e.node,
                resreq=e.resreq,
                state=e.state,
                session_id=e.session_id,
                reserved_for=e.reserved_for,
                tasks=list(e.tasks.items()),
                creation_time=e.creation_time,
            )
            for e in state.executors.values()
        ],
        nodes=[
            NodeSnap(
                info=n.info,
                state=n.state,
                incarnation=n.incarnation,
                epoch=n.epoch,
                registration_time=n.registration_time,
                drained=n.drained,
                secret_hash=n.secret_hash,
            )
            for n in state.nodes.values()
        ],
        max_epoch=state.max_epoch,
        records_applied=state.records_applied,
        expired_sessions=[(i, reason, time) for i, (reason, time) in state.expired_sessions.items()],
        gone=dict(state.gone),
    )


def encode_state(state: ClusterState) -> bytes:
    """Serialise the durable part of `state` (call between loop turns)."""
    return _encoder.encode(to_snapshot(state))


# ------------------------------------------------------------------------------- decode


def _tasks(columns: TaskColumns, base: int) -> list[TaskEntry]:
    """Format 1 columns -> the session's task list."""
    pending = TaskState.Pending
    tasks: list[TaskEntry] = [
        TaskEntry(index, pending, task_input, creation)
        for index, task_input, creation in zip(
            range(base + 1, base + len(columns.input) + 1), columns.input, columns.creation_time, strict=True
        )
    ]
    # Most tasks of a big session are untouched Pending ones: set only the fields that differ.
    states = _STATES
    expired: list[int] = []
    for index, code in enumerate(columns.state):
        if code == _EXPIRED:
            expired.append(index)
        elif code:
            tasks[index].state = states[code]
    for name in ("output", "start_time", "completion_time", "executor_id", "message"):
        column: list[object] = getattr(columns, name)
        for index, value in enumerate(column):
            if value is not None:
                setattr(tasks[index], name, value)
    for name in ("attempt", "retry_count"):
        for index, value in enumerate(getattr(columns, name)):
            if value:
                setattr(tasks[index], name, value)
    for task_id, events in columns.events.items():
        tasks[task_id - 1 - base].events = list(events)
    for index in expired:
        tasks[index] = EXPIRED_TASK
    return tasks


def _session_entry(snap: SessionSnap) -> SessionEntry:
    session = SessionEntry(snap.id, snap.spec, snap.creation_time)
    session.state = snap.state
    session.completion_time = snap.completion_time
    session.events = list(snap.events)
    session.bind_failures = snap.bind_failures
    session.pending = deque(snap.pending)
    session.base = snap.base
    if snap.columns is not None:
        session.tasks = TaskTable.from_snap(snap.columns)
    elif snap.tasks is not None:
        session.tasks = TaskTable.from_entries(_tasks(snap.tasks, snap.base), snap.base)
    else:
        session.tasks = TaskTable.from_entries(snap.entries, snap.base)
    session.batches = dict(snap.batches)
    session.bind_paused = snap.bind_paused
    session.expired_tasks = snap.expired_tasks
    session.last_active = snap.last_active or snap.creation_time
    if snap.counts:
        # Totals since the session began: the expired tasks count too, and they are gone.
        session.counts.update(snap.counts)
    elif snap.tasks is not None:
        for code, count in collections.Counter(snap.tasks.state).items():
            session.counts[_STATES[code]] += count
    return session


def from_snapshot(snap: StateSnapshot) -> ClusterState:
    state = ClusterState()
    state.applications = {a.name: a for a in snap.applications}
    state.sessions = {s.id: _session_entry(s) for s in snap.sessions}
    for e in snap.executors:
        executor = ExecutorEntry(e.id, e.node, e.resreq, e.creation_time)
        executor.state = e.state
        executor.session_id = e.session_id
        executor.reserved_for = e.reserved_for
        executor.tasks = dict(e.tasks)
        state.executors[e.id] = executor
    for n in snap.nodes:
        node = NodeEntry(n.info, n.incarnation, n.epoch, n.registration_time, n.secret_hash)
        node.state = n.state
        node.drained = n.drained
        state.nodes[node.name] = node
    state.max_epoch = snap.max_epoch
    state.records_applied = snap.records_applied
    state.expired_sessions = {i: (reason, time) for i, reason, time in snap.expired_sessions}
    state.gone = dict(snap.gone)
    # Derived: finished tasks held, and closed sessions in the order they closed.
    state.finished_held = sum(s.finished_held() for s in state.sessions.values())
    closed = [s for s in state.sessions.values() if s.state is SessionState.Closed]
    closed.sort(key=lambda s: s.completion_time or 0)
    state.closed = {s.id: s.completion_time or 0 for s in closed}
    return state


def decode_state(payload: bytes) -> ClusterState:
    """Rebuild the state a snapshot was taken of; raises `SnapshotFormatError` on bytes this
    version cannot read (naming the bad field)."""
    try:
        snap = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise SnapshotFormatError(f"snapshot does not decode: {exc}") from exc
    if snap.format not in READABLE:
        raise SnapshotFormatError(f"snapshot format {snap.format} is not one this version reads ({READABLE})")
    return from_snapshot(snap)
