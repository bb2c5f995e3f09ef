"""`ClusterFeed`: the live picture of a cluster, as a dashboard (flame-tui) needs it.

The feed is a client of the session manager like any other: one I/O thread of the SDK (so the
socket, CURVE, the first-contact deadline and reconnects are every client's) holding a
`SubscribeCluster` stream and, while a session's tasks are on screen, a whole-session
`WatchTasks` stream (`streams`). A thread of the feed's own takes what arrives and hands it to
`deliver` in batches, at most every `min_gap` seconds: task watches push once per session
manager loop turn, and a screen redrawn per push would redraw at the task rate.

Liveness (`Liveness`, pure): the session manager pushes to each subscriber at least once a
second. When nothing has come for `silence` seconds the feed delivers `Disconnected` with how
long it has been, and from then on asks for its streams again every `silence` seconds (same
request ids, so the session manager replaces rather than doubles them) until data comes; then
`Connected` and a fresh `ClusterSnapshot`. A session manager that stops, freezes, or restarts
as a new process on the same endpoint is so noticed within `silence` seconds and followed again
as soon as it answers, with no restart of the dashboard. Nothing here blocks on the network:
requests wait in the I/O thread's backlog while nothing is connected.

Delivered items: `Connected`, `Disconnected`, `ClusterSnapshot`, `ClusterUpdates`, `TaskUpdates`
(of the watched session) and `Notice` (how an action, closing a session or draining a node,
went). `deliver` is called on the feed's thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from flamed.client.connection import settings_or_error
from flamed.client.errors import FlameError
from flamed.client.io_thread import IoThread
from flamed.client.streams import Stream
from protocol import frontend as fe
from protocol.codec import PROTOCOL_VERSION


@dataclass(frozen=True)
class Connected:
    """Data flows (again) from the session manager at `endpoint`."""

    endpoint: str
    cluster: str = ""
    server_version: str = ""


@dataclass(frozen=True)
class Disconnected:
    """Nothing comes from the session manager at `endpoint`, and why; what was shown is old."""

    endpoint: str
    reason: str


@dataclass(frozen=True)
class Notice:
    """How an action went, in words (wire strings in it are not escaped yet)."""

    message: str
    error: bool = False


FeedItem = Connected | Disconnected | Notice | fe.ClusterSnapshot | fe.ClusterUpdates | fe.TaskUpdates
#: Called on the feed's thread with everything that arrived together (one UI hop per batch).
Deliver = Callable[[list[FeedItem]], None]


class Liveness:
    """Whether the subscription is live, and when to ask for it again. Pure: time is an
    argument, nothing here sends."""

    def __init__(self, silence: float) -> None:
        self.silence = silence
        self.up = False
        #: when the last subscription message came (None: none yet)
        self.heard: float | None = None
        self._next_ask = float("inf")

    def heard_at(self, now: float) -> bool:
        """A subscription message came; True if that makes it live again (or for the first time)."""
        self.heard = now
        came_back = not self.up
        self.up = True
        self._next_ask = float("inf")
        return came_back

    def refused(self, now: float) -> None:
        """The session manager refused the subscription: not live; ask again later."""
        self.up = False
        self._next_ask = now + self.silence

    def check(self, now: float) -> tuple[float | None, bool]:
        """(seconds of silence if the subscription is lost just now, else None; whether to ask
        for the streams again now)."""
        if self.up and self.heard is not None and now - self.heard > self.silence:
            self.up = False
            self._next_ask = now + self.silence
            return now - self.heard, True
        if not self.up and now >= self._next_ask:
            self._next_ask = now + self.silence
            return None, True
        return None, False

    def started(self, now: float) -> None:
        """The streams were just asked for: ask again after `silence` if nothing comes."""
        self._next_ask = now + self.silence

    def next_check(self) -> float:
        """When `check` may next have something to say."""
        if self.up and self.heard is not None:
            return self.heard + self.silence
        return self._next_ask


class _Inbox:
    """A stream's sink: puts what the I/O thread hands it on the feed's queue (never blocks)."""

    __slots__ = ("kind", "queue")

    def __init__(self, kind: str, inbox: queue.SimpleQueue[tuple[str, Any]]) -> None:
        self.kind = kind
        self.queue = inbox

    def message(self, message: fe.ServerReply) -> None:
        self.queue.put((self.kind, message))


class ClusterFeed:
    """The session manager's cluster subscription, delivered in batches; see the module docstring."""

    def __init__(
        self,
        addr: str | None = None,
        *,
        config: str | None = None,
        interval: float = 0.25,
        silence: float = 3.5,
        min_gap: float = 0.2,
        client: str = "flame-tui",
    ) -> None:
        """Endpoint and keys as `open_connection` finds them (FlameError INVALID_CONFIG if the
        configuration cannot be used). Nothing is sent before `start`."""
        self._settings = settings_or_error(addr, config)
        self.endpoint = self._settings.endpoint
        self.interval = interval
        self.min_gap = min_gap
        self.client = client
        self._config = config
        self._liveness = Liveness(silence)
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._io: IoThread | None = None
        self._thread: threading.Thread | None = None
        self._subscription = Stream(fe.SubscribeCluster(interval=interval), _Inbox("cluster", self._inbox))
        self._watch: Stream | None = None
        #: the cluster's name and version, from the last `Welcome`
        self._cluster = self._server_version = ""

    # ------------------------------------------------------------------ owner's side

    def start(self, deliver: Deliver) -> None:
        """Subscribe and start delivering (on the feed's thread) until `stop`."""
        io = IoThread(self.endpoint, self._settings.timeout, config_path=self._config, settings=self._settings)
        self._io = io
        io.open_stream(self._subscription)
        self._liveness.started(time.monotonic())
        self._hello()
        self._thread = threading.Thread(target=self._run, args=(deliver,), name="flame-cluster-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop delivering and close the connection (idempotent)."""
        self._stop.set()
        self._inbox.put(("stop", None))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        if self._io is not None:
            self._io.close()

    def watch_session(self, session_id: str | None) -> None:
        """Deliver the `TaskUpdates` of every task of `session_id` (first all of them, then
        the changes); another session replaces it; None stops watching."""
        io = self._need_io()
        if session_id is None:
            if self._watch is not None:
                io.close_stream(self._watch)
                self._watch = None
            return
        request = fe.WatchTasks(session_id=session_id, include_data=False)
        if self._watch is None:
            self._watch = Stream(request, _Inbox("tasks", self._inbox))
            io.open_stream(self._watch)
        else:
            io.resend_stream(self._watch, request)

    def close_session(self, session_id: str) -> None:
        """Close the session (pending tasks are cancelled); a `Notice` says how it went."""
        future = self._need_io().call(fe.CloseSession(session_id=session_id))
        future.add_done_callback(lambda f: self._notice(f, f"close session {session_id}"))

    def drain_node(self, name: str, drained: bool) -> None:
        """Cordon (`drained`) or uncordon the node; a `Notice` says how it went."""
        message: fe.Message = fe.DrainNode(name=name) if drained else fe.UndrainNode(name=name)
        future = self._need_io().call(message)
        future.add_done_callback(lambda f: self._notice(f, f"{'drain' if drained else 'undrain'} node {name}"))

    def _need_io(self) -> IoThread:
        if self._io is None:
            raise RuntimeError("ClusterFeed.start() first")
        return self._io

    # ------------------------------------------------------------------ I/O thread's side

    def _hello(self) -> None:
        future = self._need_io().call(fe.Hello(protocol_version=PROTOCOL_VERSION, client=self.client))
        future.add_done_callback(lambda f: self._inbox.put(("hello", f)))

    def _notice(self, future: Future[Any], what: str) -> None:
        error = future.exception()
        if isinstance(error, FlameError):
            notice = Notice(f"{what}: {error.message}", error=True)
        elif error is not None:
            notice = Notice(f"{what}: {error}", error=True)
        else:
            notice = Notice(f"{what}: {_outcome(future.result())}")
        self._inbox.put(("notice", notice))

    # ------------------------------------------------------------------ feed's thread

    def _run(self, deliver: Deliver) -> None:
        batch: list[FeedItem] = []
        last_emit = float("-inf")
        while not self._stop.is_set():
            now = time.monotonic()
            wake = self._liveness.next_check()
            if batch:
                wake = min(wake, last_emit + self.min_gap)
            try:
                kind, payload = self._inbox.get(timeout=min(1.0, max(0.0, wake - now)))
            except queue.Empty:
                pass
            else:
                self._take(kind, payload, batch)
                for _ in range(10_000):  # everything else already there, without waiting
                    try:
                        kind, payload = self._inbox.get_nowait()
                    except queue.Empty:
                        break
                    self._take(kind, payload, batch)
            if self._stop.is_set():
                return
            now = time.monotonic()
            silent, ask = self._liveness.check(now)
            if silent is not None:
                batch.append(Disconnected(self.endpoint, f"no message for {silent:.1f}s"))
            if ask:
                self._ask_again()
            if batch and now - last_emit >= self.min_gap:
                deliver(batch)
                batch, last_emit = [], now

    def _take(self, kind: str, payload: Any, batch: list[FeedItem]) -> None:
        now = time.monotonic()
        if kind == "cluster":
            if isinstance(payload, fe.Error):
                self._liveness.refused(now)
                batch.append(Disconnected(self.endpoint, f"refused: {payload.code}: {payload.message}"))
            elif isinstance(payload, fe.ClusterSnapshot | fe.ClusterUpdates):
                if self._liveness.heard_at(now):
                    batch.append(self._connected())
                    self._hello()  # the session manager may be a new process, of another version
                batch.append(payload)
        elif kind == "tasks":
            if isinstance(payload, fe.TaskUpdates):
                batch.append(payload)
            elif isinstance(payload, fe.Error):
                batch.append(Notice(f"watch of tasks: {payload.code}: {payload.message}", error=True))
        elif kind == "hello":
            self._on_hello(payload, batch)
        elif kind == "notice":
            batch.append(payload)

    def _on_hello(self, future: Future[Any], batch: list[FeedItem]) -> None:
        error = future.exception()
        if error is None:
            welcome = future.result()
            if isinstance(welcome, fe.Welcome):
                self._cluster, self._server_version = welcome.cluster, welcome.server_version
                if self._liveness.up:
                    batch.append(self._connected())
        elif not self._liveness.up:
            reason = error.message if isinstance(error, FlameError) else str(error)
            batch.append(Disconnected(self.endpoint, reason))

    def _connected(self) -> Connected:
        return Connected(self.endpoint, self._cluster, self._server_version)

    def _ask_again(self) -> None:
        io, watch = self._io, self._watch
        if io is None:
            return
        with contextlib.suppress(FlameError):  # closed by `stop` meanwhile
            io.resend_stream(self._subscription)
            if watch is not None:
                io.resend_stream(watch)


def _outcome(reply: object) -> str:
    if isinstance(reply, fe.SessionReply):
        return str(reply.session.state)
    if isinstance(reply, fe.NodeReply):
        return "drained" if reply.node.drained else "not drained"
    return type(reply).__name__
