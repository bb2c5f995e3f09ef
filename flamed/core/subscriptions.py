"""Cluster subscriptions: the live feed behind dashboards (`SubscribeCluster`).

A subscriber first gets a `ClusterSnapshot` (nodes, executors, sessions, recent events, stats),
then `ClusterUpdates` with the nodes, executors and sessions that changed since the last push.
Pushes are coalesced: at most one every `interval` (0.25 s by default), whatever the task rate,
so the cost is bounded by the number of entities that changed, not by the number of changes;
when nothing changed a small keep-alive (heartbeat ages, stats) still goes out every second.

Changes are learnt from the records committed (`note`: the turn tells its observers before a
record is applied, so removals can still name their node), plus a cheap check of node liveness,
which also moves without records (the link's connection state, read through `NodeFeed`).
Subscriptions live as long as their peer (the controller forgets a peer silent for
`client_ttl`). Nothing here changes state.

Snapshots are built at the end of the turn, not in the request handler, and like every push
never for a peer whose outgoing queue is congested (`Clients`): a subscriber that missed an
update that way is *stale* and gets a fresh snapshot (same request id) once it reads again.
Subscriptions are counted per client (`count_of`) for limits.max_subscriptions_per_client.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from flamed.core import records as r
from flamed.core.machines import InvalidTransition, Machine
from flamed.core.machines.executor import EXECUTOR, ExecutorTrigger
from flamed.core.machines.node import NODE, NodeTrigger
from flamed.core.state import ClusterState
from flamed.core.turn import Turn
from flamed.core.views import NodeViews, executor_view, session_view
from protocol.frontend import ClusterEvent, ClusterSnapshot, ClusterUpdates, Message, SubscribeCluster
from protocol.types import Session, SessionState, TaskState

#: Bounds on what a client may ask for and what the server keeps.
MIN_INTERVAL, MAX_INTERVAL = 0.1, 5.0
KEEPALIVE = 1.0
EVENTS_KEPT = 500
EVENTS_PER_PUSH = 200

#: The controller's statistics, as `GetStats` shows them.
Stats = Callable[[], dict[str, float]]


class NodeFeed(NodeViews, Protocol):
    """What a subscription reads of the nodes beyond their views (the node links answer)."""

    def link_mark(self, name: str) -> tuple[object, ...]: ...

    def heartbeat_ages(self, now: float) -> dict[str, float]: ...


class Subscriber:
    __slots__ = ("client", "interval", "peer", "request", "stale")

    def __init__(self, peer: bytes, client: bytes, request: SubscribeCluster) -> None:
        self.peer = peer
        self.client = client
        self.request = request
        self.interval = min(MAX_INTERVAL, max(MIN_INTERVAL, request.interval))
        #: its next push must be a snapshot (it has none yet, or it missed an update)
        self.stale = True

    @property
    def request_id(self) -> int:
        return self.request.request_id


class Subscriptions:
    def __init__(self) -> None:
        self.subscribers: dict[bytes, Subscriber] = {}
        self.per_client: collections.Counter[bytes] = collections.Counter()
        self.events: collections.deque[ClusterEvent] = collections.deque(maxlen=EVENTS_KEPT)
        self._new_events: list[ClusterEvent] = []
        self._nodes: set[str] = set()
        self._executors: set[str] = set()
        self._sessions: set[str] = set()
        self._node_marks: dict[str, tuple[object, ...]] = {}
        self._last_push = float("-inf")

    def __len__(self) -> int:
        return len(self.subscribers)

    @property
    def interval(self) -> float:
        return min((s.interval for s in self.subscribers.values()), default=MAX_INTERVAL)

    # ------------------------------------------------------------------ clients

    def count_of(self, client: bytes) -> int:
        """Subscriptions of `client` (limits.max_subscriptions_per_client)."""
        return self.per_client[client]

    def add(self, peer: bytes, client: bytes, request: SubscribeCluster) -> None:
        """Register (or replace) `peer`'s subscription; its snapshot goes out with the turn's
        pushes (`collect`), as soon as the peer reads."""
        self.remove(peer)
        self.subscribers[peer] = Subscriber(peer, client, request)
        self.per_client[client] += 1

    def _snapshot(self, subscriber: Subscriber, turn: Turn, nodes: NodeFeed, stats: Stats) -> ClusterSnapshot:
        request = subscriber.request
        state, now = turn.state, turn.now
        open_sessions = [s for s in state.sessions.values() if s.state is SessionState.Open]
        closed = sorted(
            (s for s in state.sessions.values() if s.state is not SessionState.Open),
            key=lambda s: s.completion_time or s.creation_time,
        )
        keep_closed = closed[len(closed) - max(0, request.closed_sessions) :] if request.closed_sessions > 0 else []
        events = list(self.events)[-max(0, request.events) :] if request.events > 0 else []
        return ClusterSnapshot(
            request_id=request.request_id,
            nodes=nodes.node_views(state, now.mono),
            executors=[executor_view(state, e) for e in state.executors.values()],
            sessions=[_lean(session_view(s)) for s in open_sessions + keep_closed],
            events=events,
            stats=stats(),
            server_time=now.wall,
        )

    def remove(self, peer: bytes) -> None:
        subscriber = self.subscribers.pop(peer, None)
        if subscriber is not None:
            self.per_client[subscriber.client] -= 1
            if self.per_client[subscriber.client] <= 0:
                del self.per_client[subscriber.client]

    # ------------------------------------------------------------------ changes

    def note(self, record: r.AnyRecord, state: ClusterState) -> None:
        """A record is about to be applied: remember what it changes and the event it makes
        (events are kept even without subscribers, for the next one's snapshot)."""
        match record:
            case r.TasksDispatched():
                self._sessions.add(record.session_id)
                self._executors.add(record.executor_id)
            case r.TasksCreated():
                self._sessions.add(record.session_id)
            case r.PendingTasksFailed():
                self._sessions.add(record.session_id)
                self._event(record.time, "task", record.session_id, f"pending tasks Failed: {record.reason}")
            case r.TasksFinished():
                self._sessions.add(record.session_id)
                self._finished(record, state)
            case r.TasksRequeued():
                self._sessions.add(record.session_id)
                verb = "retried" if record.count_retry else "returned to the queue"
                what = f"{_tasks(record.task_ids)} {verb}: {record.reason}"
                self._event(record.time, "task", record.session_id, what)
            case r.ExecutorCreated() | r.ExecutorChanged() | r.ExecutorRemoved():
                self._executor(record, state)
            case r.SessionCreated() | r.SessionClosed() | r.SessionDeleted() | r.SessionEventRecorded():
                self._session(record)
            case r.NodeRegistered() | r.NodeChanged() | r.NodeRemoved():
                self._node(record, state)
            case r.SessionsExpired():
                self._sessions.update(record.session_ids)
                ids = record.session_ids
                subject = ids[0] if len(ids) == 1 else f"{ids[0]} and {len(ids) - 1} more"
                self._event(record.time, "session", subject, f"expired under retention ({record.reason})")
            case r.TasksExpired():
                self._sessions.add(record.session_id)
                count = sum(last - first + 1 for first, last in record.ranges)
                what = f"{count} finished tasks expired under retention ({record.reason})"
                self._event(record.time, "task", record.session_id, what)
            case r.NodeDrainChanged():
                self._nodes.add(record.name)
                what = ("drained" if record.drained else "undrained") + (f" ({record.reason})" if record.reason else "")
                self._event(record.time, "node", record.name, what)
            case _:
                pass

    def _executor(self, record: r.ExecutorCreated | r.ExecutorChanged | r.ExecutorRemoved, state: ClusterState) -> None:
        self._executors.add(record.executor_id)
        executor = state.executors.get(record.executor_id)
        if isinstance(record, r.ExecutorCreated):
            self._nodes.add(record.node)
            self._event(record.time, "executor", record.executor_id, f"created on node {record.node}: Void")
            return
        if executor is not None:
            self._nodes.add(executor.node)
        if isinstance(record, r.ExecutorRemoved):
            self._event(record.time, "executor", record.executor_id, "removed")
        elif executor is not None:
            target = _next(EXECUTOR, executor.state, ExecutorTrigger, record.trigger)
            where = f" for session {record.session_id}" if record.session_id else ""
            self._event(record.time, "executor", record.executor_id, f"{record.trigger}{where}: {target}")

    def _session(self, record: r.SessionCreated | r.SessionClosed | r.SessionDeleted | r.SessionEventRecorded) -> None:
        self._sessions.add(record.session_id)
        match record:
            case r.SessionCreated():
                what = f"created: Open (app {record.spec.application})"
            case r.SessionClosed():
                what = "closed: Closed"
            case r.SessionDeleted():
                what = "deleted"
            case r.SessionEventRecorded():
                what = record.event.message or f"event {record.event.code}"
        self._event(record.time, "session", record.session_id, what)

    def _node(self, record: r.NodeRegistered | r.NodeChanged | r.NodeRemoved, state: ClusterState) -> None:
        match record:
            case r.NodeRegistered():
                name, what = record.info.name, f"registered (epoch {record.epoch}): Ready"
            case r.NodeChanged():
                name = record.name
                node = state.nodes.get(name)
                target = _next(NODE, node.state, NodeTrigger, record.trigger) if node else "?"
                what = f"{record.trigger}: {target}" + (f" ({record.reason})" if record.reason else "")
            case r.NodeRemoved():
                name, what = record.name, "removed"
        self._nodes.add(name)
        self._event(record.time, "node", name, what)

    def _finished(self, record: r.TasksFinished, state: ClusterState) -> None:
        session = state.sessions.get(record.session_id)
        failed = [f for f in record.tasks if f.state is TaskState.Failed]
        if failed:
            reason = failed[0].message or "no reason given"
            self._event(
                record.time, "task", record.session_id, f"{_tasks([f.task_id for f in failed])} Failed: {reason}"
            )
        if session is not None:
            executor_of = session.tasks.executor_of
            for finish in record.tasks:
                if finish.task_id > session.base and (executor_id := executor_of(finish.task_id)):
                    self._executors.add(executor_id)

    def _event(self, time: int, kind: str, subject: str, message: str) -> None:
        event = ClusterEvent(time=time, kind=kind, subject=subject, message=message)
        self.events.append(event)
        if self.subscribers:
            self._new_events.append(event)

    @staticmethod
    def _marks(state: ClusterState, nodes: NodeFeed) -> dict[str, tuple[object, ...]]:
        """What of each node can change without a record: its link."""
        return {name: (node.state, node.drained, *nodes.link_mark(name)) for name, node in state.nodes.items()}

    # ------------------------------------------------------------------ pushes

    def next_deadline(self, congested: Callable[[bytes], bool]) -> float:
        if not self.subscribers:
            return float("inf")
        if any(s.stale and not congested(s.peer) for s in self.subscribers.values()):
            return 0.0  # a snapshot is due now
        return self._update_deadline()

    def _update_deadline(self) -> float:
        dirty = self._nodes or self._executors or self._sessions or self._new_events
        return self._last_push + (self.interval if dirty else KEEPALIVE)

    def collect(
        self, turn: Turn, nodes: NodeFeed, stats: Stats, congested: Callable[[bytes], bool]
    ) -> list[tuple[bytes, Message]]:
        """The pushes due now: a snapshot for each stale subscriber that reads, and when the
        interval is up one `ClusterUpdates` for each other one; nothing for `congested` peers
        (they become stale)."""
        if not self.subscribers:
            self._nodes.clear()
            self._executors.clear()
            self._sessions.clear()
            self._new_events.clear()
            return []
        now = turn.now
        pushes: list[tuple[bytes, Message]] = []
        snapshots = set()
        for s in self.subscribers.values():
            if s.stale and not congested(s.peer):
                pushes.append((s.peer, self._snapshot(s, turn, nodes, stats)))
                s.stale = False
                snapshots.add(s.peer)
        if now.mono < self._update_deadline():
            return pushes
        self._last_push = now.mono
        update = self._build(turn, nodes, stats)
        for s in self.subscribers.values():
            if s.peer in snapshots:
                continue
            if congested(s.peer):
                if not s.stale:
                    turn.count("cluster_updates_skipped")
                s.stale = True
                continue
            pushes.append((s.peer, msgspec.structs.replace(update, request_id=s.request_id)))
        return pushes

    def _build(self, turn: Turn, nodes: NodeFeed, stats: Stats) -> ClusterUpdates:
        state, now = turn.state, turn.now
        marks = self._marks(state, nodes)
        changed = self._nodes | {n for n, mark in marks.items() if self._node_marks.get(n) != mark}
        self._node_marks = marks
        update = ClusterUpdates(stats=stats(), server_time=now.wall)
        for name in sorted(changed):
            view = nodes.node_view(state, name, now.mono)
            if view is None:
                update.removed_nodes.append(name)
            else:
                update.nodes.append(view)
        for executor_id in self._executors:
            executor = state.executors.get(executor_id)
            if executor is None:
                update.removed_executors.append(executor_id)
            else:
                update.executors.append(executor_view(state, executor))
        for session_id in self._sessions:
            session = state.sessions.get(session_id)
            if session is None:
                update.removed_sessions.append(session_id)
            else:
                update.sessions.append(_lean(session_view(session)))
        update.events = self._new_events[-EVENTS_PER_PUSH:]
        update.heartbeat_ages = nodes.heartbeat_ages(now.mono)
        self._nodes, self._executors, self._sessions, self._new_events = set(), set(), set(), []
        return update


def _lean(session: Session) -> Session:
    session.events = []
    return session


def _tasks(task_ids: list[int]) -> str:
    if len(task_ids) == 1:
        return f"task {task_ids[0]}"
    shown = ", ".join(str(t) for t in task_ids[:5])
    return f"{len(task_ids)} tasks ({shown}{', ...' if len(task_ids) > 5 else ''})"


def _next(machine: Machine[Any, Any], current: object, triggers: type[enum.Enum], trigger: str) -> str:
    """The state a trigger leads to, for the event text ("?" if the table does not say)."""
    try:
        return str(machine.next(current, triggers(trigger)))
    except (ValueError, InvalidTransition):
        return "?"
