"""What the dashboard knows of the cluster, kept up to date from the subscription feed.

`ClusterModel.apply(message, now)` folds one pushed message (`ClusterSnapshot`,
`ClusterUpdates`, `TaskUpdates`) into dicts keyed by id and returns a `Changes` naming what
moved, so the views touch only those rows. Pure: no widgets, no sockets, time is an argument.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from protocol import frontend as fe
from protocol.types import Executor, Node, Session, Task, TaskState

EVENTS_KEPT = 500
SPARK_POINTS = 60  # one a second: the last minute


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

    # ------------------------------------------------------------------ feed

    def apply(self, message: object, now: float) -> Changes:
        self.last_data = now
        changes = Changes()
        match message:
            case fe.ClusterSnapshot():
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
                        self.tasks[task.id] = task
                        changes.tasks.add(task.id)
        return changes

    def _updates(self, message: fe.ClusterUpdates, changes: Changes, now: float) -> None:
        for node in message.nodes:
            self.nodes[node.name] = node
            changes.nodes.add(node.name)
        for executor in message.executors:
            self.executors[executor.id] = executor
            changes.executors.add(executor.id)
        for session in message.sessions:
            self.sessions[session.id] = session
            changes.sessions.add(session.id)
        for name in message.removed_nodes:
            self.nodes.pop(name, None)
            self.heartbeat_ages.pop(name, None)
            changes.nodes.add(name)
        for executor_id in message.removed_executors:
            self.executors.pop(executor_id, None)
            changes.executors.add(executor_id)
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

    # ------------------------------------------------------------------ derived

    def task_window(self, limit: int) -> list[int]:
        """The ids of the tasks that get a row: all of a session of up to `limit` tasks; of a
        bigger one the first `limit` and, beyond them, the failed and retried ones (at most
        `limit` more). Such rows stay once shown and change in place: rows coming and going at
        the task rate (say, every running task) would cost more to draw than they tell."""
        if len(self.tasks) <= limit:
            return sorted(self.tasks)
        first = sorted(self.tasks)[:limit]
        last = first[-1]
        extra = [
            task_id
            for task_id, task in self.tasks.items()
            if task_id > last and (task.state is TaskState.Failed or task.retry_count)
        ]
        return first + sorted(extra)[:limit]

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
