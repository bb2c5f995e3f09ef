"""Where the dashboard's data comes from: a `Feed` delivers items to the app.

`LiveFeed` owns one DEALER socket in its own thread: it says `Hello`, sends
`SubscribeCluster`, renews it with `Ping` every 2 s, and declares the session manager lost
when nothing (not even the 1 s keep-alive push) arrived for `silence` seconds; then it closes
the socket and starts again with a fresh one until it succeeds. Items are `Connected`,
`Disconnected` or a decoded `ServerReply`; the app applies them on its own thread.
Tests use `FakeFeed`, which records what the app asked for and delivers nothing by itself.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import zmq

from protocol import frontend as fe
from protocol.codec import PROTOCOL_VERSION, FrameError, encode, server_reply_codec


@dataclass(frozen=True)
class Connected:
    endpoint: str
    cluster: str = ""
    server_version: str = ""


@dataclass(frozen=True)
class Disconnected:
    endpoint: str
    reason: str


FeedItem = Connected | Disconnected | fe.Message
#: Called from the feed's thread with every item that arrived together (one UI hop per batch).
Deliver = Callable[[list[FeedItem]], None]


class Feed(Protocol):
    endpoint: str

    def start(self, deliver: Deliver) -> None: ...
    def stop(self) -> None: ...
    def watch_session(self, session_id: str | None) -> None: ...
    def close_session(self, session_id: str) -> None: ...
    def drain_node(self, name: str, drained: bool) -> None: ...


class FakeFeed:
    """A feed for tests: remembers the app's requests; the test delivers items itself."""

    def __init__(self, endpoint: str = "fake://cluster") -> None:
        self.endpoint = endpoint
        self.deliver: Deliver | None = None
        self.watched: list[str | None] = []
        self.closed: list[str] = []
        self.drained: list[tuple[str, bool]] = []
        self.stopped = False

    def start(self, deliver: Deliver) -> None:
        self.deliver = deliver

    def stop(self) -> None:
        self.stopped = True

    def watch_session(self, session_id: str | None) -> None:
        self.watched.append(session_id)

    def close_session(self, session_id: str) -> None:
        self.closed.append(session_id)

    def drain_node(self, name: str, drained: bool) -> None:
        self.drained.append((name, drained))


class LiveFeed:
    """The session manager's `SubscribeCluster` feed over ZeroMQ, in a thread."""

    PING_EVERY = 2.0

    def __init__(self, endpoint: str, interval: float = 0.25, silence: float = 3.5, min_gap: float = 0.2) -> None:
        self.endpoint = endpoint
        self.interval = interval
        self.min_gap = min_gap
        self.silence = silence
        self._deliver: Deliver | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._outgoing: list[fe.Message] = []
        self._watched: str | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._watch_request = 0

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._thread = threading.Thread(target=self._run, name="flame-tui-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def watch_session(self, session_id: str | None) -> None:
        with self._lock:
            self._watched = session_id
            if session_id is not None:
                self._watch_request = next(self._ids)
                self._outgoing.append(
                    fe.WatchTasks(request_id=self._watch_request, session_id=session_id, include_data=False)
                )

    def close_session(self, session_id: str) -> None:
        with self._lock:
            self._outgoing.append(fe.CloseSession(request_id=next(self._ids), session_id=session_id))

    def drain_node(self, name: str, drained: bool) -> None:
        message: fe.Message = fe.DrainNode(name=name) if drained else fe.UndrainNode(name=name)
        message.request_id = next(self._ids)
        with self._lock:
            self._outgoing.append(message)

    # ------------------------------------------------------------------ thread

    def _emit(self, *items: FeedItem) -> None:
        if self._deliver is not None and not self._stop.is_set() and items:
            self._deliver(list(items))

    def _run(self) -> None:
        from flamed.transport.security import configured_client_curve
        from flamed.transport.sockets import connect_dealer

        try:
            curve = configured_client_curve()
        except Exception as exc:  # ConfigError, SecurityError: the message says what to fix
            self._emit(Disconnected(self.endpoint, str(exc)))
            return
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            # Random: the session manager hands an id over to whoever connects with it.
            routing_id = f"tui-{secrets.token_hex(8)}-{attempt}".encode()
            sock = connect_dealer(self.endpoint, routing_id, curve=curve)
            try:
                reason = self._session(sock)
            finally:
                sock.close(0)
            if self._stop.is_set():
                return
            self._emit(Disconnected(self.endpoint, reason))
            self._stop.wait(min(5.0, 0.5 * attempt))

    def _session(self, sock: zmq.Socket[bytes]) -> str:
        """One connection's life; returns why it ended."""
        decode = server_reply_codec().decode
        sock.send_multipart(
            encode(fe.Hello(request_id=next(self._ids), protocol_version=PROTOCOL_VERSION, client="flame-tui"))
        )
        sock.send_multipart(encode(fe.SubscribeCluster(request_id=next(self._ids), interval=self.interval)))
        with self._lock:
            if self._watched is not None:
                self._watch_request = next(self._ids)
                self._outgoing.append(
                    fe.WatchTasks(request_id=self._watch_request, session_id=self._watched, include_data=False)
                )
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        last_heard = last_ping = last_emit = time.monotonic()
        connected = False
        batch: list[FeedItem] = []
        while not self._stop.is_set():
            with self._lock:
                outgoing, self._outgoing = self._outgoing, []
            for message in outgoing:
                sock.send_multipart(encode(message))
            now = time.monotonic()
            if now - last_ping >= self.PING_EVERY:
                sock.send_multipart(encode(fe.Ping(request_id=next(self._ids))))
                last_ping = now
            if now - last_heard > self.silence:
                return f"no message for {now - last_heard:.1f}s"
            # Hand over at most every `min_gap`: task watches push once per server loop turn,
            # and one UI update per push would redraw the screen at the task rate.
            if batch and now - last_emit >= self.min_gap:
                self._emit(*batch)
                batch, last_emit = [], now
            wait = self.min_gap - (now - last_emit) if batch else 0.2
            if not poller.poll(max(1, int(wait * 1000))):
                continue
            while sock.poll(0) and len(batch) < 10_000:
                try:
                    message = decode(sock.recv_multipart())
                except FrameError as exc:
                    return f"bad message from the session manager: {exc.message}"
                last_heard = time.monotonic()
                if isinstance(message, fe.Welcome):
                    connected = True
                    batch.append(Connected(self.endpoint, message.cluster, message.server_version))
                elif isinstance(message, fe.Error) and not connected:
                    return f"refused: {message.message}"
                elif isinstance(message, fe.TaskUpdates) and message.request_id != self._watch_request:
                    continue  # a watch of a session no longer shown
                elif not isinstance(message, fe.Pong):
                    batch.append(message)
        return "stopped"
