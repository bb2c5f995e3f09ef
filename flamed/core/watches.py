"""Task watches: server pushes of task state changes to the clients that asked (`WatchTasks`,
or `CreateTasks{watch}` for the results of the tasks it creates).

Rules:
- a watch is named by its peer and request id; a new watch under the same name replaces it
  (a client renewing its watches after a reconnect does not double them);
- a `WatchTasks` watch first gets the current state of its tasks (every task of the session,
  for a whole-session watch), then each change; a `CreateTasks{watch}` watch gets each of its
  tasks once, terminal, and nothing else;
- changes are coalesced per watch into a set of pending ids and pushed at the end of a loop
  turn as `TaskUpdates` pages (`pages.py`), with the tasks' state at that moment; a peer gets
  at most `turn_bytes` of pages per turn (the rest follows next turn, `more` set on the page);
- nothing is built for a peer whose outgoing queue is congested (`Clients`): its changes stay
  pending until it reads again. Pending ids of a watch on ids are a subset of its ids (bounded
  by the watched-ids limits); a whole-session watch folds a pending set bigger than
  `FOLD_AFTER` into a *sweep*, a range of ids pushed again in order, so it holds O(1);
- a watch on ids ends when every one of them was pushed terminal; a whole-session watch when
  its session is closed and everything is pushed; any watch when its session is deleted (a
  watch belongs to the session *entry* it was opened on, not to a later session of that id).
  Its end is said: its last page carries `final`, or an empty `TaskUpdates{final}` follows
  (with `reason` when the session was deleted), so a client can tell an ended watch from a lost
  connection. A watch forgotten with its peer, or ended by a rollback (answered with an error),
  gets none;
- the ids watched are counted per client and in all, for the limits; whole-session watches
  count none. A watch lives as long as its peer: it is forgotten with it (`drop_peer`).
Nothing here touches state.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Collection, Iterator, Mapping

from flamed.core import pages
from flamed.core import records as r
from flamed.core.state import ClusterState, SessionEntry
from protocol.frontend import TaskUpdates
from protocol.types import SessionState, Task, TaskState

#: A whole-session watch whose pending ids outgrow this pushes a range of ids instead.
FOLD_AFTER = 256
TERMINAL = frozenset(state for state in TaskState if state.is_terminal)


class Watch:
    __slots__ = (
        "client",
        "entry",
        "first",
        "include_data",
        "peer",
        "pending",
        "pos",
        "queue",
        "remaining",
        "request_id",
        "session_id",
        "sweep",
        "sweep_end",
        "terminal_only",
    )

    def __init__(
        self,
        peer: bytes,
        request_id: int,
        session_id: str,
        remaining: set[int] | None,
        *,
        include_data: bool,
        terminal_only: bool = False,
        client: bytes = b"",
    ) -> None:
        self.peer = peer
        self.client = client or peer
        self.request_id = request_id
        self.session_id = session_id
        self.remaining = remaining  # None: every task of the session, until it closes
        self.include_data = include_data
        #: `CreateTasks{watch}`: push a task only once, when it is terminal
        self.terminal_only = terminal_only
        #: the first push (the reply to `WatchTasks`) is still due, even if it is empty
        self.first = False
        #: ids to push, in order: first the sweep [sweep, sweep_end], then queue[pos:]
        self.sweep = 1
        self.sweep_end = 0
        self.queue: list[int] = []
        self.pos = 0
        #: changed ids not yet queued
        self.pending: set[int] = set()
        #: the session it watches (set when registered)
        self.entry: SessionEntry | None = None

    @property
    def key(self) -> tuple[bytes, int]:
        return self.peer, self.request_id

    def has_work(self) -> bool:
        return self.first or self.sweep <= self.sweep_end or self.pos < len(self.queue) or bool(self.pending)

    def finished(self, session: SessionEntry | None) -> bool:
        """Nothing more will ever be pushed (once `has_work()` is false)."""
        if self.remaining is not None:
            return not self.remaining and not self.first
        return session is None or session.state is SessionState.Closed

    def ids(self) -> Iterator[int]:
        """The ids of the next page, in order (moves pending ids to the queue first)."""
        if self.pos >= len(self.queue) and self.pending:
            self.queue, self.pos = sorted(self.pending), 0
            self.pending.clear()
        yield from range(self.sweep, self.sweep_end + 1)
        queue = self.queue
        for index in range(self.pos, len(queue)):
            yield queue[index]

    def consumed(self, count: int) -> None:
        """The next page took `count` ids from `ids()`."""
        swept = min(count, max(0, self.sweep_end - self.sweep + 1))
        self.sweep += swept
        self.pos += count - swept
        if self.pos >= len(self.queue):
            self.queue, self.pos = [], 0

    def changed(self, task_ids: Collection[int], session: SessionEntry) -> bool:
        """Note the ids of `session` that changed; True when this watch has something new."""
        remaining = self.remaining
        if remaining is not None:
            ids = task_ids & remaining if isinstance(task_ids, set) else remaining.intersection(task_ids)
            if self.terminal_only:
                finished = session.tasks.finished  # not `session.task`: no task built per id
                ids = {i for i in ids if finished(i)}
            if not ids:
                return False
            self.pending |= ids
            return True
        if not task_ids:
            return False
        sweep, end = self.sweep, self.sweep_end
        if sweep <= end:
            self.pending.update(i for i in task_ids if not sweep <= i <= end)
        else:
            self.pending.update(task_ids)
        if len(self.pending) > FOLD_AFTER:
            low, high = min(self.pending), max(self.pending)
            self.sweep, self.sweep_end = (min(sweep, low), max(end, high)) if sweep <= end else (low, high)
            self.pending.clear()
        return True


class Watches:
    def __init__(self, max_page_tasks: int = 10_000, max_page_bytes: int = 1 << 20) -> None:
        self.max_page_tasks = max_page_tasks
        self.max_page_bytes = max_page_bytes
        #: bytes of pages one peer gets per loop turn (at least one page)
        self.turn_bytes = 2 * max_page_bytes
        self.by_session: dict[str, dict[Watch, None]] = {}
        self.by_peer: dict[bytes, dict[int, Watch]] = {}
        #: watches with something to push, per peer
        self.due: dict[bytes, dict[Watch, None]] = {}
        self.watch_count: collections.Counter[bytes] = collections.Counter()
        self.watched: collections.Counter[bytes] = collections.Counter()
        self.total_watched = 0
        #: after `take_pushes`: a peer that may read still has pages due (push again soon)
        self.more = False
        #: empty final pushes of watches that ended, sent with the next `take_pushes`
        self.finals: list[tuple[bytes, TaskUpdates]] = []

    def __len__(self) -> int:
        return sum(len(w) for w in self.by_peer.values())

    # ------------------------------------------------------------------ counts (limits)

    def get(self, peer: bytes, request_id: int) -> Watch | None:
        return self.by_peer.get(peer, {}).get(request_id)

    def count(self, client: bytes) -> int:
        """Open watches of `client` (limits.max_watches_per_client)."""
        return self.watch_count[client]

    def watched_by(self, client: bytes) -> int:
        """Task ids `client` watches (limits.max_watched_tasks_per_client)."""
        return self.watched[client]

    def _count(self, watch: Watch, sign: int) -> None:
        self.watch_count[watch.client] += sign
        if self.watch_count[watch.client] <= 0:
            del self.watch_count[watch.client]
        if watch.remaining:
            self._count_ids(watch.client, sign * len(watch.remaining))

    def _count_ids(self, client: bytes, ids: int) -> None:
        self.watched[client] += ids
        self.total_watched += ids
        if self.watched[client] <= 0:
            del self.watched[client]

    # ------------------------------------------------------------------ adding and dropping

    def add(self, watch: Watch, session: SessionEntry) -> None:
        """Register a `WatchTasks` watch (replacing one of the same name); its first push,
        the current state of its tasks, is due."""
        self._register(watch, session)
        watch.first = True
        if watch.remaining is not None:
            watch.queue = sorted(watch.remaining)
        else:
            watch.sweep, watch.sweep_end = session.base + 1, session.task_count
        self._due(watch)

    def add_results(self, watch: Watch, session: SessionEntry) -> None:
        """Register a `CreateTasks{watch}` watch (replacing one of the same name): no first push
        (its tasks were just created, Pending), then each task once, when it is terminal."""
        self._register(watch, session)

    def _register(self, watch: Watch, session: SessionEntry) -> None:
        old = self.get(watch.peer, watch.request_id)
        if old is not None:
            self._drop(old)
        watch.entry = session
        self.by_session.setdefault(watch.session_id, {})[watch] = None
        self.by_peer.setdefault(watch.peer, {})[watch.request_id] = watch
        self._count(watch, 1)

    def _due(self, watch: Watch) -> None:
        self.due.setdefault(watch.peer, {})[watch] = None

    def _drop(self, watch: Watch) -> None:
        session_watches = self.by_session.get(watch.session_id)
        if session_watches is not None:
            session_watches.pop(watch, None)
            if not session_watches:
                del self.by_session[watch.session_id]
        peer_watches = self.by_peer.get(watch.peer)
        if peer_watches is not None and peer_watches.get(watch.request_id) is watch:
            del peer_watches[watch.request_id]
            if not peer_watches:
                del self.by_peer[watch.peer]
            self._count(watch, -1)
        due = self.due.get(watch.peer)
        if due is not None:
            due.pop(watch, None)
            if not due:
                del self.due[watch.peer]

    def drop_peer(self, peer: bytes) -> None:
        """Forget every watch of `peer` (it went silent for the client ttl)."""
        for watch in list(self.by_peer.get(peer, {}).values()):
            self._drop(watch)

    def note(self, record: r.AnyRecord, state: ClusterState) -> None:
        """A record is about to be applied (`Turn.commit`): a session's watches end with it;
        expired tasks are no longer waited for."""
        if isinstance(record, r.SessionDeleted):
            self.drop_session(record.session_id)
        elif isinstance(record, r.SessionsExpired):
            for session_id in record.session_ids:
                for watch in list(self.by_session.get(session_id, ())):
                    self._end(watch, f"session {session_id} expired under retention ({record.reason})")
        elif isinstance(record, r.TasksExpired):
            self._tasks_expired(record)

    def _tasks_expired(self, record: r.TasksExpired) -> None:
        """A watch on ids forgets those that expire (they will never be pushed), and ends when
        none is left; sweeps and queues skip expired ids as they page (`_page`)."""
        for watch in list(self.by_session.get(record.session_id, ())):
            remaining = watch.remaining
            if not remaining:
                continue
            gone = [i for i in remaining if any(first <= i <= last for first, last in record.ranges)]
            if not gone:
                continue
            remaining.difference_update(gone)
            watch.pending.difference_update(gone)
            self._count_ids(watch.client, -len(gone))
            if not watch.has_work() and watch.finished(watch.entry):
                self._end(watch)

    def drop_session(self, session_id: str) -> None:
        """The session is being deleted: its watches are over (and must not keep it alive)."""
        for watch in list(self.by_session.get(session_id, ())):
            self._end(watch, f"session {session_id} was deleted")

    def _end(self, watch: Watch, reason: str = "") -> None:
        """Forget `watch` and tell its client it is over (an empty final push)."""
        self._drop(watch)
        self.finals.append((watch.peer, TaskUpdates(request_id=watch.request_id, tasks=[], final=True, reason=reason)))

    def end(self, keys: set[tuple[bytes, int]], sessions: Mapping[str, SessionEntry]) -> None:
        """After a turn was rolled back (`sessions` re-read from disk): forget the watches
        named in `keys` and those of sessions that are gone, and let the others forget tasks
        that no longer exist."""
        for watches in list(self.by_peer.values()):
            for watch in list(watches.values()):
                session = sessions.get(watch.session_id)
                if watch.key in keys or session is None:
                    self._drop(watch)
                else:
                    watch.entry = session  # the same session, re-read
                    self._forget_beyond(watch, session.task_count)

    def _forget_beyond(self, watch: Watch, count: int) -> None:
        watch.sweep_end = min(watch.sweep_end, count)
        watch.queue = [i for i in watch.queue[watch.pos :] if i <= count]
        watch.pos = 0
        watch.pending = {i for i in watch.pending if i <= count}
        if watch.remaining is not None:
            gone = [i for i in watch.remaining if i > count]
            if gone:
                watch.remaining.difference_update(gone)
                self._count_ids(watch.client, -len(gone))

    # ------------------------------------------------------------------ changes and pushes

    def collect(self, state: ClusterState) -> None:
        """Note every watched task that changed since the last call; forget the changes."""
        touched, state.touched = state.touched, {}
        for session_id, task_ids in touched.items():
            watches = self.by_session.get(session_id)
            if not watches:
                continue
            session = state.sessions.get(session_id)
            for watch in list(watches):
                if session is None or watch.entry is not session:
                    self._end(watch, f"session {session_id} was deleted")
                elif watch.changed(task_ids, session):
                    self._due(watch)
                elif not watch.has_work() and watch.finished(session):
                    self._end(watch)

    def take_pushes(self, state: ClusterState, congested: Callable[[bytes], bool]) -> list[tuple[bytes, TaskUpdates]]:
        """The pages due now, for every peer that is not `congested`, within each peer's
        per-turn budget; finished watches end."""
        pushes, self.finals = self.finals, []
        self.more = False
        for peer in list(self.due):
            if congested(peer):
                continue
            budget = self.turn_bytes
            due = self.due[peer]
            for watch in list(due):
                session = state.sessions.get(watch.session_id)
                if session is not watch.entry:
                    session = None  # deleted (and maybe created again): the watch is over
                push: TaskUpdates | None = None
                while session is not None and budget > 0 and watch.has_work():
                    push, size = self._page(session, watch)
                    pushes.append((peer, push))
                    budget -= size
                if not watch.has_work() or session is None:
                    due.pop(watch, None)
                    if session is None:
                        self._end(watch, f"session {watch.session_id} was deleted")
                    elif watch.finished(session):
                        if push is not None:
                            push.final = True  # its last page says so
                            self._drop(watch)
                        else:
                            self._end(watch)
                if budget <= 0:
                    break
            if not due:
                self.due.pop(peer, None)
            else:
                self.more = True
        pushes.extend(self.finals)  # ends noted while pushing (a deleted session's watches)
        self.finals = []
        return pushes

    def _page(self, session: SessionEntry, watch: Watch) -> tuple[TaskUpdates, int]:
        held, pushed = session.tasks.held, session.tasks.pushed
        session_id, include_data = session.id, watch.include_data
        pulled = 0  # ids taken from the watch, expired ones (skipped) included
        last = 0

        def live_ids() -> Iterator[int]:
            nonlocal pulled, last
            for task_id in watch.ids():
                pulled += 1
                if held(task_id):  # the task is built once, by `view`
                    last = task_id
                    yield task_id

        def view(task_id: int) -> Task:
            # pushes carry state and message; GetTask gives the events (`TaskTable.pushed`)
            task = pushed(task_id, session_id, include_data)
            assert task is not None  # live_ids gives live tasks only
            return task

        tasks, size = pages.page(live_ids(), view, self.max_page_tasks, self.max_page_bytes)
        # The page stops either after its last task or on a task it had no room for (pulled,
        # not taken: it comes first next time).
        watch.consumed(pulled if not tasks or tasks[-1].id == last else pulled - 1)
        watch.first = False
        remaining = watch.remaining
        if remaining is not None and tasks:
            # a terminal_only watch pushes terminal tasks only
            done = [t.id for t in tasks] if watch.terminal_only else [t.id for t in tasks if t.state in TERMINAL]
            before = len(remaining)
            remaining.difference_update(done)
            if before != len(remaining):
                self._count_ids(watch.client, len(remaining) - before)
        return TaskUpdates(request_id=watch.request_id, tasks=tasks, more=watch.has_work()), size
