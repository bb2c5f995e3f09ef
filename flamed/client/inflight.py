"""Reply dispatch: what the I/O thread has sent and still expects, matched by `request_id`.

`InFlight` holds the requests awaiting their reply (a call's future, or the parts of a
`CreateTasks` batch) and the open watches (per-task sinks fed by `TaskUpdates` pushes). Rules:
- a reply completes and forgets its request; an `Error` reply becomes a `FlameError`, on the
  future or on every sink of the batch;
- a `TaskUpdates` push goes to the sinks of its watch; a sink that says it is done, or a task
  in a terminal state, is dropped, and a watch with no sinks left is closed; a `final` push
  closes it whatever is left (those sinks fail with its reason);
- an `Error` under a watch's request id (unknown session or task) ends the watch;
- a `TasksCreated` for a batch that asked for results opens its watch under the same request
  id; `dispatch` returns it as an `OpenWatch` for the thread to follow; a second `TasksCreated`
  under that id (the batch was sent again after a reconnect, and both answers arrived) is the
  same answer again and changes nothing;
- anything under the request id of an open stream (`streams`) goes to its sink, and the
  stream stays open (streams.py);
- after a reconnect, `renewals` says what to send again;
- `held` keeps the creates waiting for room under the session manager's watch limit
  (`batching.release`); `watch_load` is what takes room: open watches and streams, and the
  `CreateTasks{watch}` batches awaiting their reply; `fail_all` fails the held creates too.
Nothing here touches the socket or reads the clock: the thread passes `now` and sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, NamedTuple

from flamed.client.batching import hand_out_ids
from flamed.client.commands import Create
from flamed.client.errors import FlameError, FlameErrorCode, from_server
from flamed.client.futures import TaskFuture
from flamed.client.sinks import WatchSinks, complete_run, fail_sink, set_exception, set_result, sinks_of, update_sink
from flamed.client.streams import Stream
from protocol import frontend as fe
from protocol.types import Task, TaskState

log = logging.getLogger("flamed.client")

#: Most task ids sent in one `WatchTasks` (the session manager's default
#: `limits.max_watch_task_ids`); a bigger watch goes out as several, each its own watch.
MAX_WATCH_IDS = 10_000

_SUCCEED = TaskState.Succeed


def split_sinks(sinks: WatchSinks) -> list[WatchSinks]:
    """`sinks` in chunks of at most `MAX_WATCH_IDS` task ids, in id order."""
    ids = sorted(sinks)
    return [{i: sinks[i] for i in ids[k : k + MAX_WATCH_IDS]} for k in range(0, len(ids), MAX_WATCH_IDS)]


#: Requests that change nothing, or change nothing when repeated (opening an open session,
#: closing a closed one, cordoning a cordoned node): safe to send again after a reconnect.
#: Not in it: creating or deleting a session or an application (a repeat would be refused).
REPEATABLE: frozenset[type[fe.Message]] = frozenset(
    {
        fe.Hello,
        fe.GetApplication,
        fe.ListApplications,
        fe.OpenSession,
        fe.GetSession,
        fe.ListSessions,
        fe.CloseSession,
        fe.GetTask,
        fe.ListTasks,
        fe.ListNodes,
        fe.GetNode,
        fe.DrainNode,
        fe.UndrainNode,
        fe.ListExecutors,
        fe.GetExecutor,
        fe.GetStats,
    }
)


class PendingCall:
    """A request awaiting its reply; `future` None for fire-and-forget (a `Ping`). `request`
    is kept, when it is `REPEATABLE`, to be sent again after a reconnect, once `sent`."""

    __slots__ = ("deadline", "future", "request", "sent")

    def __init__(self, future: Future[Any] | None, deadline: float, request: fe.Message | None = None) -> None:
        self.future = future
        self.deadline = deadline
        self.request = request if type(request) in REPEATABLE else None
        self.sent = False


class PendingCreate:
    """A `CreateTasks` batch awaiting its `TasksCreated`; `parts` in request order. `request`
    is kept to be sent again after a reconnect (it has a key, so that is safe), once `sent`."""

    __slots__ = ("deadline", "parts", "request", "sent", "session_id")

    def __init__(self, session_id: str, parts: list[Create], deadline: float, request: fe.CreateTasks) -> None:
        self.session_id = session_id
        self.parts = parts
        self.deadline = deadline
        self.request = request
        self.sent = False


class ActiveWatch:
    """An open watch; `sent` once its request left the socket (renewed on reconnect)."""

    __slots__ = ("include_data", "sent", "session_id", "sinks")

    def __init__(self, session_id: str, sinks: WatchSinks) -> None:
        self.session_id = session_id
        self.sinks = sinks
        self.sent = False
        self.include_data = True


class OpenWatch(NamedTuple):
    """Follow `sinks` under `request_id`: the server pushes already, no request goes out."""

    request_id: int
    session_id: str
    sinks: WatchSinks


class InFlight:
    """Requests awaiting replies, open watches and streams; used by the I/O thread only."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        # Insertion order is request-id order, hence deadline order (see `expired`).
        self.pending: dict[int, PendingCall | PendingCreate] = {}
        self.watches: dict[int, ActiveWatch] = {}
        self.streams: dict[int, Stream] = {}
        #: creates not sent yet, per session in order of first sight (`batching.release`)
        self.held: dict[str, list[Create]] = {}
        #: the `CreateTasks{watch}` batches in `pending` (added by `add_create`)
        self.watching_creates = 0

    def add_create(self, request_id: int, record: PendingCreate) -> None:
        """Await the reply to a `CreateTasks` batch (counted by `watch_load` if it watches)."""
        self.pending[request_id] = record
        if record.request.watch:
            self.watching_creates += 1

    def _pop(self, request_id: int) -> PendingCall | PendingCreate | None:
        pending = self.pending.pop(request_id, None)
        if type(pending) is PendingCreate and pending.request.watch:
            self.watching_creates -= 1
        return pending

    def watch_load(self) -> int:
        """What counts against the session manager's watch limit: every open watch and stream
        (a whole-session task watch is a stream), and every `CreateTasks{watch}` in flight."""
        return len(self.watches) + len(self.streams) + self.watching_creates

    def dispatch(self, reply: fe.ServerReply) -> OpenWatch | None:
        """Complete what `reply` answers; return the watch a `TasksCreated` opens, if any."""
        request_id = reply.request_id
        if isinstance(reply, fe.TaskUpdates):
            watch = self.watches.get(request_id)
            if watch is not None:
                self._on_updates(request_id, watch, reply.tasks)
                if reply.final and request_id in self.watches:
                    # The server ended the watch with tasks still unfinished here (their session
                    # was deleted): nothing more will come for them.
                    del self.watches[request_id]
                    why = reply.reason or "the session manager ended the watch"
                    _fail_watch(watch, FlameError(FlameErrorCode.INVALID_STATE, why))
                return None
        if self.streams:
            stream = self.streams.get(request_id)
            if stream is not None:
                stream.sink.message(reply)
                return None
        if isinstance(reply, fe.TaskUpdates):
            return None  # a watch that ended, or a stream that was closed
        watch = self.watches.get(request_id)
        if watch is not None:
            if isinstance(reply, fe.TasksCreated):
                # The answer to a batch sent again after a reconnect whose first answer did
                # arrive (the session manager answers a repeated key again): its watch is open
                # already, under this id, and the results follow on it.
                return None
            del self.watches[request_id]  # an Error (unknown session or task) ends a watch
            _fail_watch(watch, self._error_of(reply))
            return None
        pending = self._pop(request_id)
        if pending is None:
            if isinstance(reply, fe.Error):
                log.warning("session manager at %s: %s: %s", self.endpoint, reply.code, reply.message)
            return None
        if isinstance(pending, PendingCall):
            if pending.future is not None:
                if isinstance(reply, fe.Error):
                    set_exception(pending.future, from_server(reply.code, reply.message))
                else:
                    set_result(pending.future, reply)
            return None
        if isinstance(reply, fe.TasksCreated):
            wanted = sum(len(part.inputs) for part in pending.parts)
            if len(reply.task_ids) != wanted:  # a broken or hostile server: fail the batch, not the thread
                error = f"{len(reply.task_ids)} task ids for {wanted} inputs from {self.endpoint}"
                _fail_record(pending, FlameError(FlameErrorCode.INTERNAL, error))
                return None
            sinks = hand_out_ids(pending.parts, reply.task_ids)
            return OpenWatch(request_id, pending.session_id, sinks)
        _fail_record(pending, self._error_of(reply))
        return None

    def _error_of(self, reply: fe.ServerReply) -> FlameError:
        if isinstance(reply, fe.Error):
            return from_server(reply.code, reply.message)
        return FlameError(FlameErrorCode.INTERNAL, f"unexpected {type(reply).__name__} from {self.endpoint}")

    def _on_updates(self, request_id: int, watch: ActiveWatch, tasks: list[Task]) -> None:
        all_sinks = watch.sinks
        get = all_sinks.get
        for task in tasks:
            sinks = get(task.id)
            if sinks is None:
                continue
            if type(sinks) is TaskFuture:  # the common case: one `run()` future, completed in place
                if task.state is _SUCCEED:
                    sinks.complete(task.output)
                elif not complete_run(sinks, task):
                    continue  # not terminal yet
                del all_sinks[task.id]
                continue
            if not isinstance(sinks, list):  # one sink of another kind
                if update_sink(sinks, task) or task.state.is_terminal:
                    del all_sinks[task.id]
                continue
            kept = [sink for sink in sinks if not update_sink(sink, task)]
            if task.state.is_terminal or not kept:
                del all_sinks[task.id]
            elif len(kept) != len(sinks):
                all_sinks[task.id] = kept
        if not all_sinks:
            del self.watches[request_id]

    def renewals(self, new_id: Callable[[], int]) -> list[tuple[int, fe.Message]]:
        """After a reconnect (a restarted session manager holds no watch), what to send again,
        in order, as (request id, message), marked unsent: every watch already sent (its first
        `MAX_WATCH_IDS` tasks under its own id, replacing the watch the session manager may still
        hold; the others as new watches under ids from `new_id`); every stream already sent and
        not waiting to be; every repeatable request already sent, since its reply may have been
        lost with the old connection (a repeat is harmless: reads and repeatable calls by
        nature, task batches by their keys, the session manager answering the first reply)."""
        again: list[tuple[int, fe.Message]] = []
        watches = self.watches
        for request_id, watch in list(watches.items()):
            if not watch.sent:
                continue
            first, *others = split_sinks(watch.sinks)
            watch.sent = False
            watch.sinks = first
            again.append((request_id, fe.WatchTasks(session_id=watch.session_id, task_ids=sorted(first))))
            for chunk in others:
                other_id = new_id()
                watches[other_id] = ActiveWatch(watch.session_id, chunk)
                again.append((other_id, fe.WatchTasks(session_id=watch.session_id, task_ids=sorted(chunk))))
        for stream in self.streams.values():
            if stream.sent and not stream.queued:
                stream.queued = True
                again.append((stream.request_id, stream.request))
        for request_id, record in self.pending.items():
            if record.sent and record.request is not None:
                record.sent = False
                again.append((request_id, record.request))
        return again

    def expired(self, now: float) -> list[int]:
        """The request ids whose deadline has passed at `now`, oldest first."""
        expired = []
        for request_id, pending in self.pending.items():
            if pending.deadline > now:
                break  # one timeout for all: deadlines grow with request ids
            expired.append(request_id)
        return expired

    def fail_pending(self, request_id: int, error: FlameError) -> None:
        """Forget the request, failing its future or the futures and sinks of its batch."""
        pending = self._pop(request_id)
        if pending is not None:
            _fail_record(pending, error)

    def fail_watches(self, error: FlameError) -> None:
        """Close every watch, failing its sinks."""
        watches, self.watches = self.watches, {}
        for watch in watches.values():
            _fail_watch(watch, error)

    def fail_all(self, error: FlameError) -> None:
        """Close every watch, then fail every request awaiting its reply, then every held create."""
        self.fail_watches(error)
        pending, self.pending = self.pending, {}
        self.watching_creates = 0
        for record in pending.values():
            _fail_record(record, error)
        held, self.held = self.held, {}
        for parts in held.values():
            _fail_parts(parts, error)


def _fail_record(record: PendingCall | PendingCreate, error: FlameError) -> None:
    if isinstance(record, PendingCall):
        if record.future is not None:
            set_exception(record.future, error)
        return
    _fail_parts(record.parts, error)


def _fail_parts(parts: list[Create], error: FlameError) -> None:
    for part in parts:
        if part.future is not None:
            set_exception(part.future, error)
        for sink in part.sinks or ():
            fail_sink(sink, error)


def _fail_watch(watch: ActiveWatch, error: FlameError) -> None:
    for sinks in watch.sinks.values():
        for sink in sinks_of(sinks):
            fail_sink(sink, error)
