"""What the dashboard knows of the cluster, kept up to date from the subscription feed.

`ClusterModel.apply(message, now)` folds one pushed message (`ClusterSnapshot`,
`ClusterUpdates`, `TaskUpdates`) into dicts keyed by id and returns a `Changes` naming what
moved, so the views touch only those rows. Pure: no widgets, no sockets, time is an argument.

Running is not what the wire says: the session manager dispatches tasks ahead (a window per
executor), and all of them are Running on the wire although an instance runs one at a time.
The model tells them apart with the executors' task lists: the first task an executor holds
runs, the others are *Queued* on it (`task_phase`, `running_split`).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import NamedTuple

from protocol import frontend as fe
from protocol.types import Executor, Node, Session, Task, TaskState

EVENTS_KEPT = 500
SPARK_POINTS = 60  # one a second: the last minute
QUEUED = "Queued"
#: What the Tasks view can be narrowed to (key f), in the order f cycles through them.
TASK_PHASES = ("Running", QUEUED, "Pending", "Failed", "Succeed", "Cancelled")


class TaskPage(NamedTuple):
    """One page of the Tasks view: the ids on it, which page of how many, of how many tasks."""

    ids: list[int]
    page: int
    pages: int
    matching: int


@dataclass
class Changes:
    nodes: set[str] = field(default_factory=set)
    executors: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    tasks: set[int] = field(default_factory=set)
    events: list[fe.ClusterEvent] = field(default_factory=list)
    reset: bool = False  # a snapshot: every view is rebuilt from the model

    def __bool__(self) -> bool:
        return bool(self.nodes or self.executors or self.sessions or self.tasks or self.events or self.reset)

    def merge(self, other: Changes) -> None:
        """Add what `other` names (changes kept while paused, drawn at once on resume)."""
        self.nodes |= other.nodes
        self.executors |= other.executors
        self.sessions |= other.sessions
        self.tasks |= other.tasks
        self.events.extend(other.events)
        self.reset = self.reset or other.reset


class ClusterModel:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.executors: dict[str, Executor] = {}
        self.sessions: dict[str, Session] = {}
        self.events: collections.deque[fe.ClusterEvent] = collections.deque(maxlen=EVENTS_KEPT)
        self.stats: dict[str, float] = {}
        self.tasks_session: str | None = None
        self.tasks: dict[int, Task] = {}
        self.heartbeat_ages: dict[str, tuple[float, float]] = {}  # node -> (age, when received)
        self.throughput: collections.deque[float] = collections.deque(maxlen=SPARK_POINTS)
        self.last_data: float | None = None  # monotonic time of the last message
        self.server_time = 0
        self._rate_base: tuple[float, float] | None = None  # (time, tasks completed) of the last point
        self._busy: dict[str, int] | None = None  # session -> executors holding its tasks (lazy)
        self._ids: list[int] | None = None  # the watched session's task ids, sorted (lazy)
        self._texts: dict[int, str] = {}  # task id -> what the `/` filter matches in it (lazy)

    # ------------------------------------------------------------------ feed

    def apply(self, message: object, now: float) -> Changes:
        self.last_data = now
        changes = Changes()
        match message:
            case fe.ClusterSnapshot():
                self._busy = None
                self.nodes = {n.name: n for n in message.nodes}
                self.executors = {e.id: e for e in message.executors}
                self.sessions = {s.id: s for s in message.sessions}
                self.events.clear()
                self.events.extend(message.events)
                self.heartbeat_ages = {
                    n.name: (n.last_heartbeat_age, now) for n in message.nodes if n.last_heartbeat_age is not None
                }
                self._stats(message.stats, message.server_time, now)
                changes.reset = True
            case fe.ClusterUpdates():
                self._updates(message, changes, now)
            case fe.TaskUpdates():
                for task in message.tasks:
                    if task.session_id == self.tasks_session:
                        if task.id not in self.tasks:
                            self._ids = None
                        self.tasks[task.id] = task
                        self._texts.pop(task.id, None)
                        changes.tasks.add(task.id)
        return changes

    def _updates(self, message: fe.ClusterUpdates, changes: Changes, now: float) -> None:
        for node in message.nodes:
            self.nodes[node.name] = node
            changes.nodes.add(node.name)
        for executor in message.executors:
            old = self.executors.get(executor.id)
            self.executors[executor.id] = executor
            changes.executors.add(executor.id)
            # Its sessions' split of Running into running and queued may have moved.
            changes.sessions.update(e.session_id for e in (old, executor) if e is not None and e.session_id)
        for session in message.sessions:
            self.sessions[session.id] = session
            changes.sessions.add(session.id)
        for name in message.removed_nodes:
            self.nodes.pop(name, None)
            self.heartbeat_ages.pop(name, None)
            changes.nodes.add(name)
        for executor_id in message.removed_executors:
            gone = self.executors.pop(executor_id, None)
            changes.executors.add(executor_id)
            if gone is not None and gone.session_id:
                changes.sessions.add(gone.session_id)
        if message.executors or message.removed_executors:
            self._busy = None
        for session_id in message.removed_sessions:
            self.sessions.pop(session_id, None)
            changes.sessions.add(session_id)
        self.events.extend(message.events)
        changes.events = list(message.events)
        for name, age in message.heartbeat_ages.items():
            self.heartbeat_ages[name] = (age, now)
            changes.nodes.add(name)
        self._stats(message.stats, message.server_time, now)

    def _stats(self, stats: dict[str, float], server_time: int, now: float) -> None:
        if not stats:
            return
        self.stats = stats
        self.server_time = server_time or self.server_time
        done = stats.get("tasks_completed_total", 0.0)
        if self._rate_base is None or done < self._rate_base[1]:
            self._rate_base = (now, done)
            return
        then, before = self._rate_base
        if now - then >= 1.0:
            self.throughput.append((done - before) / (now - then))
            self._rate_base = (now, done)

    def watch_session(self, session_id: str | None) -> None:
        self.tasks_session = session_id
        self.tasks = {}
        self._ids = None
        self._texts = {}

    # ------------------------------------------------------------------ derived

    def task_phase(self, task: Task) -> str:
        """The state shown for `task`: its wire state, except that a Running task which its
        executor holds behind another one (dispatched ahead) is `Queued`. The executor's list
        may lag the tasks' pushes (it comes with the cluster updates, a quarter second apart):
        tasks this model already knows to be finished do not count as ahead."""
        if task.state is not TaskState.Running or task.executor_id is None:
            return str(task.state)
        executor = self.executors.get(task.executor_id)
        if executor is None:
            return str(task.state)
        tasks = self.tasks
        for task_id in executor.task_ids:
            ahead = tasks.get(task_id)
            if ahead is None or not ahead.state.is_terminal:
                return str(task.state) if task_id == task.id else QUEUED
        return str(task.state)

    def running_split(self, session: Session) -> tuple[int, int]:
        """(running, queued) of the session's Running tasks: at most one runs on each executor
        that holds tasks of it; the rest wait on those executors."""
        if self._busy is None:
            held = (e.session_id for e in self.executors.values() if e.session_id and e.task_ids)
            self._busy = collections.Counter(held)
        running = min(session.running, self._busy.get(session.id, 0))
        return running, session.running - running

    def task_counts(self) -> dict[str, int]:
        """Tasks by state over the cluster (the stats' counts), Running split into Running and
        Queued as `running_split` does."""
        counts = {state: int(self.stats.get(f"tasks_{state.lower()}", 0)) for state in TASK_PHASES if state != QUEUED}
        running = sum(self.running_split(s)[0] for s in self.sessions.values())
        counts["Running"], counts[QUEUED] = min(running, counts["Running"]), max(0, counts["Running"] - running)
        return counts

    def task_page(self, size: int, page: int, phase: str | None = None, text: str = "") -> TaskPage:
        """Page `page` (from 0; the last one if past it) of the watched session's tasks in id
        order, of those in `phase` (see `task_phase`) whose id, state, executor or message
        holds `text` (lower case) when given."""
        if self._ids is None:
            self._ids = sorted(self.tasks)
        ids = self._ids
        if phase is not None or text:
            tasks = self.tasks
            ids = [
                i
                for i in ids
                if (phase is None or self.task_phase(tasks[i]) == phase) and (not text or text in self._text(i))
            ]
        pages = max(1, math.ceil(len(ids) / size))
        page = max(0, min(page, pages - 1))
        return TaskPage(ids[page * size : (page + 1) * size], page, pages, len(ids))

    def _text(self, task_id: int) -> str:
        text = self._texts.get(task_id)
        if text is None:
            task = self.tasks[task_id]
            text = f"{task.id} {task.state} {task.executor_id or ''} {task.message or ''}".lower()
            self._texts[task_id] = text
        return text

    def heartbeat_age(self, name: str, now: float) -> float | None:
        """Seconds since the node was last heard, extrapolated since the last push."""
        entry = self.heartbeat_ages.get(name)
        if entry is None:
            return None
        age, received = entry
        return age + max(0.0, now - received)

    def data_age(self, now: float) -> float | None:
        return None if self.last_data is None else now - self.last_data

    def totals(self) -> dict[str, int]:
        counts: collections.Counter[str] = collections.Counter()
        for node in self.nodes.values():
            counts[f"nodes_{node.state}"] += 1
        for executor in self.executors.values():
            counts[f"executors_{executor.state}"] += 1
        for session in self.sessions.values():
            counts[f"sessions_{session.state}"] += 1
        return dict(counts)
