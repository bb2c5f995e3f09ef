"""The session manager's durable state and the one function that changes it: `apply`.

`apply(record)` is called for every change as it is decided and again, at start-up, for every
record replayed from the log; so it must be deterministic and must not look at anything but the
record and the state. Validation happens before a record is built (in the controller);
`apply` trusts records, and a record that does not fit the state raises (a bug, not input).

Tasks are held column by column (`flamed.core.tasks.TaskTable`, about 50 bytes per task plus
its data), because a session manager holds hundreds of thousands of them; a read gets a
`TaskEntry` value.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from flamed.core import records as r
from flamed.core.machines.executor import EXECUTOR, ExecutorTrigger
from flamed.core.machines.node import NODE, NodeTrigger
from flamed.core.machines.session import SESSION, SessionTrigger
from flamed.core.machines.task import TASK, TaskTrigger
from flamed.core.tasks import EXPIRED, TaskEntry, TaskTable
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

#: Session event codes (task events use the task state's index, as Flame).
SESSION_BIND_FAILED = 1001
SESSION_RETRY_LIMIT_REACHED = 1002
SESSION_TASKS_EXPIRED = 1003
#: Expired sessions remembered, newest last, so that reading one says it expired (a bounded
#: ring: about 150 bytes each; older ones then read as never existed).
EXPIRED_REMEMBERED = 100_000
TASK_EVENT_CODES = {
    TaskState.Pending: 0,
    TaskState.Running: 1,
    TaskState.Succeed: 2,
    TaskState.Failed: 3,
    TaskState.Cancelled: 4,
}


class SessionEntry:
    def __init__(self, session_id: str, spec: SessionSpec, time: int) -> None:
        self.id = session_id
        self.spec = spec
        self.state = SessionState.Open
        self.creation_time = time
        self.completion_time: int | None = None
        #: the tasks (reads: `task`, `live`; changes: `ClusterState.apply` only)
        self.tasks = TaskTable()
        #: tasks 1..base all expired (the front of `tasks`, cut off once worth it)
        self.base = 0
        #: tasks expired under retention (cut off the front, or expired slots of `tasks`)
        self.expired_tasks = 0
        self.pending: deque[int] = deque()  # FIFO of Pending task ids (requeued ones go first)
        #: tasks per state since the session began (expiry keeps the totals)
        self.counts = dict.fromkeys(TaskState, 0)
        self.events: list[Event] = []
        self.bind_failures = 0
        #: its Pending tasks were failed at the bind retry limit: no binds until new tasks come
        self.bind_paused = False
        #: `CreateTasks` keys seen: key -> (first task id, number of tasks); a key goes when
        #: all its tasks expired
        self.batches: dict[str, tuple[int, int]] = {}
        #: time (Unix ms) of the last record that created or finished tasks (idle_session_ttl)
        self.last_active = time

    @property
    def task_count(self) -> int:
        """Tasks ever created in the session (the highest task id)."""
        return self.tasks.count

    @property
    def held(self) -> int:
        """Tasks the session holds (created and not expired)."""
        return self.tasks.count - self.expired_tasks

    def finished_held(self) -> int:
        """Finished tasks (Succeed, Failed, Cancelled) the session holds."""
        counts = self.counts
        done = counts[TaskState.Succeed] + counts[TaskState.Failed] + counts[TaskState.Cancelled]
        return done - self.expired_tasks

    def task(self, task_id: int) -> TaskEntry | None:
        """Task `task_id` (a value), or None: never created, or expired (`was_expired`)."""
        return self.tasks.get(task_id) if task_id > self.base else None

    def was_expired(self, task_id: int) -> bool:
        """Task `task_id` existed and retention deleted it."""
        return 0 < task_id <= self.task_count and self.task(task_id) is None

    def live(self, task_id: int) -> TaskEntry:
        """Task `task_id`, which a record names: it must exist (else the record is a bug)."""
        task = self.task(task_id)
        if task is None:
            raise ValueError(f"task {task_id} of session {self.id} expired or never existed; a record names it")
        return task

    def state_of(self, task_id: int) -> TaskState:
        """State of task `task_id`, which a record names (it must exist)."""
        if task_id <= self.base or self.tasks.code(task_id) == EXPIRED:
            raise ValueError(f"task {task_id} of session {self.id} expired; a record names it")
        return self.tasks.state(task_id)

    def _move(self, source: TaskState, target: TaskState) -> None:
        self.counts[source] -= 1
        self.counts[target] += 1

    def expire(self, ranges: list[tuple[int, int]]) -> int:
        """Delete the finished tasks in `ranges` (inclusive); the number deleted. Expired tasks
        at the front are cut off (`base`), keys whose tasks all expired are forgotten."""
        tasks, base = self.tasks, self.base
        expired = 0
        for first, last in ranges:
            for task_id in range(max(first, base + 1), last + 1):
                if tasks.expire(task_id):
                    expired += 1
        self.expired_tasks += expired
        codes, dropped, count = tasks.codes(), tasks.dropped, tasks.count
        while base < count and codes[base - dropped] == EXPIRED:
            base += 1
        if base != self.base:
            self.base = base
            tasks.cut(base)
        batches = self.batches
        while batches:
            key, (first, count) = next(iter(batches.items()))
            if first + count - 1 > self.base and any(self.task(i) for i in range(first, first + count)):
                break
            del batches[key]
        return expired


class ExecutorEntry:
    def __init__(self, executor_id: str, node: str, resreq: ResourceRequirement, time: int) -> None:
        self.id = executor_id
        self.node = node
        self.resreq = resreq
        self.state = ExecutorState.Void
        self.session_id: str | None = None
        self.reserved_for: str | None = None  # session a Void/Idle executor was created for
        self.tasks: dict[int, int] = {}  # in-flight task id -> attempt, in dispatch order
        self.creation_time = time


class NodeEntry:
    def __init__(self, info: NodeInfo, incarnation: str, epoch: int, time: int, secret_hash: str = "") -> None:
        self.name = info.name
        self.info = info
        self.state = NodeState.Unknown
        self.incarnation = incarnation
        self.epoch = epoch
        self.registration_time = time
        self.drained = False
        #: hash of its executor manager's secret: proves "the same process" (never shown to clients)
        self.secret_hash = secret_hash


class ClusterState:
    def __init__(self) -> None:
        self.applications: dict[str, Application] = {}
        self.sessions: dict[str, SessionEntry] = {}
        self.executors: dict[str, ExecutorEntry] = {}
        self.nodes: dict[str, NodeEntry] = {}
        self.max_epoch = 0
        self.records_applied = 0
        #: session id -> ids of tasks whose state changed since the controller last looked.
        self.touched: dict[str, set[int]] = {}
        #: finished tasks held in all sessions (retention.max_finished_tasks); derived
        self.finished_held = 0
        #: closed sessions, oldest closed first: id -> completion time (Unix ms); derived
        self.closed: dict[str, int] = {}
        #: the last `EXPIRED_REMEMBERED` sessions retention deleted: id -> (reason, Unix ms)
        self.expired_sessions: dict[str, tuple[str, int]] = {}
        #: what the sessions no longer held (deleted, or expired under retention) add to the
        #: totals (`totals`): "sessions", "sessions_expired", "tasks" (created), "tasks_expired"
        #: and one key per task state they ended in; durable (in snapshots, and replayed)
        self.gone: dict[str, int] = {}

    # ---------------------------------------------------------------------------- apply

    def apply(self, record: r.AnyRecord) -> None:
        self.records_applied += 1
        match record:
            case r.TasksCreated():
                self._tasks_created(record)
            case r.TasksDispatched():
                self._tasks_dispatched(record)
            case r.TasksFinished():
                self._tasks_finished(record)
            case r.TasksRequeued():
                self._tasks_requeued(record)
            case r.PendingTasksFailed():
                self._pending_failed(record)
            case r.ExecutorChanged():
                self._executor_changed(record)
            case r.ExecutorCreated():
                entry = ExecutorEntry(record.executor_id, record.node, record.resreq, record.time)
                entry.reserved_for = record.session_id
                self.executors[record.executor_id] = entry
            case r.ExecutorRemoved():
                del self.executors[record.executor_id]
            case r.ApplicationSaved():
                self.applications[record.application.name] = record.application
            case r.ApplicationRemoved():
                del self.applications[record.name]
            case r.SessionCreated():
                self.sessions[record.session_id] = SessionEntry(record.session_id, record.spec, record.time)
                self.expired_sessions.pop(record.session_id, None)
            case r.SessionClosed():
                self._session_closed(record)
            case r.SessionDeleted():
                self._remove_session(record.session_id)
            case r.SessionsExpired():
                self._sessions_expired(record)
            case r.TasksExpired():
                self._tasks_expired(record)
            case r.SessionEventRecorded():
                session = self.sessions[record.session_id]
                session.events.append(record.event)
                if record.event.code == SESSION_BIND_FAILED:
                    session.bind_failures += 1
            case r.NodeRegistered():
                self._node_registered(record)
            case r.NodeChanged():
                node = self.nodes[record.name]
                node.state = NODE.next(node.state, NodeTrigger(record.trigger))
            case r.NodeRemoved():
                del self.nodes[record.name]
            case r.NodeDrainChanged():
                self.nodes[record.name].drained = record.drained

    def touch(self, session_id: str, task_ids: Iterable[int]) -> None:
        """Mark tasks of the session as changed for the watches (`apply` does for every record;
        a repeated `CreateTasks{watch}` does without a record, to have results pushed again)."""
        touched = self.touched.get(session_id)
        if touched is None:
            touched = self.touched[session_id] = set()
        touched.update(task_ids)

    def _remove_session(self, session_id: str, expired: bool = False) -> SessionEntry:
        session = self.sessions.pop(session_id)
        self.touched.pop(session_id, None)
        self.closed.pop(session_id, None)
        self.finished_held -= session.finished_held()
        gone = self.gone
        gone["sessions"] = gone.get("sessions", 0) + 1
        gone["tasks"] = gone.get("tasks", 0) + session.task_count
        # An expired session's tasks all expire with it; a deleted one's expired before, if any.
        expired_tasks = session.task_count if expired else session.expired_tasks
        gone["tasks_expired"] = gone.get("tasks_expired", 0) + expired_tasks
        if expired:
            gone["sessions_expired"] = gone.get("sessions_expired", 0) + 1
        for task_state, count in session.counts.items():
            if count:
                gone[task_state.value] = gone.get(task_state.value, 0) + count
        return session

    def totals(self) -> dict[str, int]:
        """Totals since the cluster began, as `GetStats` shows them: derived from the durable
        state (each session's per-state counts, which retention keeps, plus what the sessions
        no longer held added to `gone`), so they go on across session-manager restarts."""
        gone = self.gone
        sessions = self.sessions.values()
        finished = {
            task_state: sum(s.counts[task_state] for s in sessions) + gone.get(task_state.value, 0)
            for task_state in (TaskState.Succeed, TaskState.Failed, TaskState.Cancelled)
        }
        return {
            "sessions_created_total": len(self.sessions) + gone.get("sessions", 0),
            "sessions_expired_total": gone.get("sessions_expired", 0),
            "tasks_created_total": sum(s.task_count for s in sessions) + gone.get("tasks", 0),
            "tasks_succeeded_total": finished[TaskState.Succeed],
            "tasks_failed_total": finished[TaskState.Failed],
            "tasks_cancelled_total": finished[TaskState.Cancelled],
            "tasks_completed_total": finished[TaskState.Succeed] + finished[TaskState.Failed],
            "tasks_expired_total": sum(s.expired_tasks for s in sessions) + gone.get("tasks_expired", 0),
        }

    def _sessions_expired(self, record: r.SessionsExpired) -> None:
        remembered = self.expired_sessions
        for session_id in record.session_ids:
            session = self._remove_session(session_id, expired=True)
            if session.state is not SessionState.Closed:
                raise ValueError(f"session {session_id} is {session.state}; only closed sessions expire")
            remembered.pop(session_id, None)
            remembered[session_id] = (record.reason, record.time)
        while len(remembered) > EXPIRED_REMEMBERED:
            del remembered[next(iter(remembered))]

    def _tasks_expired(self, record: r.TasksExpired) -> None:
        session = self.sessions[record.session_id]
        self.finished_held -= session.expire(record.ranges)
        count = sum(last - first + 1 for first, last in record.ranges)
        event = Event(
            code=SESSION_TASKS_EXPIRED,
            message=f"{session.expired_tasks} finished tasks expired under retention ({record.reason}); "
            f"last {count} at {record.time}",
            creation_time=record.time,
        )
        # One such event per session, the latest: a long-lived session expires tasks all along.
        events = session.events
        if events and events[-1].code == SESSION_TASKS_EXPIRED:
            events[-1] = event
        else:
            session.events = [e for e in events if e.code != SESSION_TASKS_EXPIRED] + [event]

    def _tasks_created(self, record: r.TasksCreated) -> None:
        session = self.sessions[record.session_id]
        if record.first_id != session.task_count + 1:
            raise ValueError(f"task ids of {record.session_id} out of order: {record.first_id}")
        count = len(record.inputs)
        session.tasks.create(record.first_id, record.inputs, record.time)
        if record.key:
            session.batches[record.key] = (record.first_id, count)
        if session.bind_paused:  # new work: its instances may start now (a fixed command ...)
            session.bind_paused = False
            session.bind_failures = 0
        ids = range(record.first_id, record.first_id + count)
        session.pending.extend(ids)
        session.counts[TaskState.Pending] += count
        session.last_active = record.time
        self.touch(session.id, ids)

    def _tasks_dispatched(self, record: r.TasksDispatched) -> None:
        session = self.sessions[record.session_id]
        executor = self.executors[record.executor_id]
        task_ids = record.task_ids
        attempts = session.tasks.dispatch_many(task_ids, record.time, executor.id)
        executor.tasks.update(zip(task_ids, attempts, strict=True))
        count = len(task_ids)
        session.counts[TaskState.Pending] -= count
        session.counts[TaskState.Running] += count
        # Dispatch takes from the head of the queue in the common case; filter otherwise.
        pending = session.pending
        if list(_head(pending, count)) == task_ids:
            for _ in range(count):
                pending.popleft()
        else:
            dispatched = set(task_ids)
            session.pending = deque(t for t in pending if t not in dispatched)
        self.touch(session.id, task_ids)

    def _tasks_finished(self, record: r.TasksFinished) -> None:
        session = self.sessions[record.session_id]
        released, ok = session.tasks.finish_many(record.tasks, record.time)
        count = len(record.tasks)
        counts = session.counts
        counts[TaskState.Running] -= count
        counts[TaskState.Succeed] += ok
        counts[TaskState.Failed] += count - ok
        executors = self.executors
        last_name: str | None = None
        last: ExecutorEntry | None = None
        for finish, name in zip(record.tasks, released, strict=True):
            if name != last_name:
                last_name, last = name, executors.get(name) if name else None
            if last is not None:
                last.tasks.pop(finish.task_id, None)
        self.finished_held += count
        session.last_active = record.time
        self.touch(session.id, [f.task_id for f in record.tasks])

    def _tasks_requeued(self, record: r.TasksRequeued) -> None:
        session = self.sessions[record.session_id]
        for task_id in reversed(record.task_ids):
            source = session.state_of(task_id)
            session._move(source, TASK.next(source, TaskTrigger.requeue))
            self._release_task(session, task_id)
            event = None
            if record.count_retry:
                event = Event(code=0, message=f"Task was retried: {record.reason}", creation_time=record.time)
            session.tasks.requeue(task_id, event)
            session.pending.appendleft(task_id)
        self.touch(session.id, record.task_ids)

    def _pending_failed(self, record: r.PendingTasksFailed) -> None:
        session = self.sessions[record.session_id]
        failed = list(session.pending)
        target = session.tasks.end_many(failed, TaskTrigger.bind_failed, record.reason, record.time)
        session.counts[TaskState.Pending] -= len(failed)
        session.counts[target] += len(failed)
        self.finished_held += len(failed)
        session.pending.clear()
        session.bind_paused = True
        self.touch(session.id, failed)

    def _release_task(self, session: SessionEntry, task_id: int) -> None:
        executor_id = session.tasks.executor_of(task_id)
        executor = self.executors.get(executor_id) if executor_id else None
        if executor is not None:
            executor.tasks.pop(task_id, None)

    def _session_closed(self, record: r.SessionClosed) -> None:
        session = self.sessions[record.session_id]
        session.state = SESSION.next(session.state, SessionTrigger.close)
        session.completion_time = record.time
        cancelled = list(session.pending)
        target = session.tasks.end_many(cancelled, TaskTrigger.cancel, None, record.time)
        session.counts[TaskState.Pending] -= len(cancelled)
        session.counts[target] += len(cancelled)
        self.finished_held += len(cancelled)
        self.closed[session.id] = record.time
        session.pending.clear()
        self.touch(session.id, cancelled)

    def _executor_changed(self, record: r.ExecutorChanged) -> None:
        executor = self.executors[record.executor_id]
        trigger = ExecutorTrigger(record.trigger)
        executor.state = EXECUTOR.next(executor.state, trigger)
        if trigger is ExecutorTrigger.bind:
            executor.session_id = record.session_id
            executor.reserved_for = None
        elif trigger is not ExecutorTrigger.created and executor.state in _UNBOUND:
            executor.session_id = None
            executor.reserved_for = None

    def _node_registered(self, record: r.NodeRegistered) -> None:
        node = self.nodes.get(record.info.name)
        if node is None:
            node = self.nodes[record.info.name] = NodeEntry(record.info, record.incarnation, record.epoch, record.time)
        node.info = record.info
        node.incarnation = record.incarnation
        node.secret_hash = record.secret_hash
        node.epoch = record.epoch
        node.registration_time = record.time
        node.state = NODE.next(node.state, NodeTrigger.connected)
        self.max_epoch = max(self.max_epoch, record.epoch)


_UNBOUND = frozenset({ExecutorState.Idle, ExecutorState.Releasing, ExecutorState.Released})


def _head(items: deque[int], count: int) -> list[int]:
    out = []
    for index, item in enumerate(items):
        if index >= count:
            break
        out.append(item)
    return out
