"""Task watches: server pushes of task state changes to the clients that asked (`WatchTasks`,
or `CreateTasks{watch}` for the results of the tasks it creates).

A `WatchTasks` watch first gets the current state of its tasks, then, once per loop turn, one
`TaskUpdates` with every watched task that changed; a `CreateTasks{watch}` watch gets no first
push and each task only once, terminal. A watch on given ids ends when all of them are terminal;
a watch on a whole session (no ids) ends when the session is closed or deleted. Watches live
as long as their client is heard from: any request renews them, and a client silent for
`ttl` seconds (or that the socket reports gone) loses them. Nothing here touches state.
"""

from __future__ import annotations

from flamed.core.state import ClusterState, SessionEntry
from flamed.core.views import task_view
from protocol.frontend import TaskUpdates
from protocol.types import SessionState, Task


class Watch:
    __slots__ = ("include_data", "peer", "remaining", "request_id", "session_id", "terminal_only")

    def __init__(  # noqa: PLR0917 - a plain record
        self,
        peer: bytes,
        request_id: int,
        session_id: str,
        remaining: set[int] | None,
        include_data: bool,
        terminal_only: bool = False,
    ) -> None:
        self.peer = peer
        self.request_id = request_id
        self.session_id = session_id
        self.remaining = remaining  # None: every task of the session, until it closes
        self.include_data = include_data
        #: `CreateTasks{watch}`: push a task only once, when it is terminal
        self.terminal_only = terminal_only


class Watches:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.by_session: dict[str, list[Watch]] = {}
        self.peer_seen: dict[bytes, float] = {}
        self.pushes: list[tuple[bytes, TaskUpdates]] = []

    def __len__(self) -> int:
        return sum(len(w) for w in self.by_session.values())

    def seen(self, peer: bytes, now: float) -> None:
        self.peer_seen[peer] = now

    def count(self, peer: bytes) -> int:
        """Open watches of `peer` (for limits.max_watches_per_client)."""
        return sum(1 for watches in self.by_session.values() for watch in watches if watch.peer == peer)

    def add(self, watch: Watch, session: SessionEntry, now: float) -> None:
        """Register `watch` and queue its first push (current states)."""
        self.seen(watch.peer, now)
        ids = watch.remaining if watch.remaining is not None else range(1, len(session.tasks) + 1)
        tasks = [self._view(session, session.tasks[i - 1], watch) for i in sorted(ids)]
        self.pushes.append((watch.peer, TaskUpdates(request_id=watch.request_id, tasks=tasks)))
        if watch.remaining is not None:
            watch.remaining.difference_update(t.id for t in tasks if t.state.is_terminal)
            if not watch.remaining:
                return
        elif session.state is SessionState.Closed:
            return
        self.by_session.setdefault(session.id, []).append(watch)

    def add_results(self, watch: Watch, session: SessionEntry, now: float) -> None:
        """Register a `CreateTasks{watch}` watch: no first push (its tasks were just created,
        Pending), then each task once, when it is terminal."""
        self.seen(watch.peer, now)
        self.by_session.setdefault(session.id, []).append(watch)

    def _view(self, session: SessionEntry, task: object, watch: Watch) -> Task:
        # pushes carry state and message; GetTask gives the events
        return task_view(session.id, task, include_data=watch.include_data, include_events=False)  # type: ignore[arg-type]

    def collect(self, state: ClusterState) -> None:
        """Queue pushes for every watched task that changed; forget the changes."""
        touched, state.touched = state.touched, {}
        for session_id, task_ids in touched.items():
            watches = self.by_session.get(session_id)
            if not watches:
                continue
            session = state.sessions.get(session_id)
            if session is None:
                del self.by_session[session_id]
                continue
            keep = []
            for watch in watches:
                if self._push(session, watch, task_ids):
                    keep.append(watch)
            if keep:
                self.by_session[session_id] = keep
            else:
                del self.by_session[session_id]

    def _push(self, session: SessionEntry, watch: Watch, task_ids: set[int]) -> bool:
        """Push the changes `watch` cares about; False when the watch is finished."""
        ids = task_ids if watch.remaining is None else task_ids & watch.remaining
        if ids and watch.terminal_only:
            ids = {i for i in ids if session.tasks[i - 1].state.is_terminal}
        if ids:
            tasks = [self._view(session, session.tasks[i - 1], watch) for i in sorted(ids)]
            self.pushes.append((watch.peer, TaskUpdates(request_id=watch.request_id, tasks=tasks)))
            if watch.remaining is not None:
                watch.remaining.difference_update(t.id for t in tasks if t.state.is_terminal)
                return bool(watch.remaining)
        return watch.remaining is not None or session.state is SessionState.Open

    def take_pushes(self) -> list[tuple[bytes, TaskUpdates]]:
        pushes, self.pushes = self.pushes, []
        return pushes

    def drop_peer(self, peer: bytes) -> None:
        self.peer_seen.pop(peer, None)
        for session_id in list(self.by_session):
            kept = [w for w in self.by_session[session_id] if w.peer != peer]
            if kept:
                self.by_session[session_id] = kept
            else:
                del self.by_session[session_id]

    def expire(self, now: float) -> list[bytes]:
        """Drop the watches of clients silent for `ttl`; returns those peers."""
        gone = [p for p, seen in self.peer_seen.items() if now - seen > self.ttl]
        for peer in gone:
            self.drop_peer(peer)
        return gone
