"""The chaos run's witness of the session manager: one DEALER in its own thread that holds a
cluster subscription (node and executor events, node views), a whole-session task watch per
session (every state change of every task) and a `GetStats` sample every second.

It speaks the frontend protocol by hand, as `tui/feed.py` does: `Hello`, `SubscribeCluster`,
`WatchTasks`, `Ping` every 2 s; when nothing arrives for `silence` seconds (the subscription's
keep-alive comes every second) the session manager is taken for gone and a fresh socket says
it all again, until it answers. Across a session-manager restart the new subscription's
snapshot carries the events recorded at start-up, and the watch's first push the state of
every task, so nothing is missed that the session manager recorded.

What it keeps (read after `stop()`, or through the locked accessors): events by their server
time, node views at each change, stats samples, and every distinct terminal record of each
task (`terminal`): two different ones for a task mean it was recorded twice (I2), a task seen
again non-terminal after a terminal record (`reopened`) means a recorded completion was lost.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from dataclasses import dataclass

import zmq

from flamed.transport.sockets import connect_dealer
from protocol import frontend as fe
from protocol.codec import PROTOCOL_VERSION, FrameError, encode, server_reply_codec
from protocol.types import Node, Task

PING_EVERY = 2.0
EVENTS_ASKED = 500


@dataclass(frozen=True)
class SeenEvent:
    #: server wall time, seconds
    time: float
    kind: str
    subject: str
    message: str


@dataclass(frozen=True)
class NodeSight:
    received: float
    name: str
    state: str
    epoch: int
    connection: str


@dataclass(frozen=True)
class TerminalRecord:
    state: str
    completion_time: int
    message: str


class Observer:
    def __init__(self, endpoint: str, silence: float = 3.0, stats_every: float = 1.0) -> None:
        self.endpoint = endpoint
        self.silence = silence
        self.stats_every = stats_every
        self.lock = threading.Lock()
        self.events: dict[SeenEvent, float] = {}
        self.nodes: list[NodeSight] = []
        self.stats: list[tuple[float, dict[str, float]]] = []
        self.terminal: dict[tuple[str, int], list[TerminalRecord]] = {}
        self.reopened: list[tuple[str, int, str, float]] = []
        self.connections: list[tuple[float, str]] = []
        #: pushes that carried the most events a push may hold (some may have been dropped)
        self.full_pushes = 0
        self._sessions: list[str] = []
        self._watch_ids: dict[int, str] = {}
        self._last_node: dict[str, NodeSight] = {}
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-observer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def watch(self, session_id: str) -> None:
        """Watch every task of the session from now on (sent on the next turn)."""
        with self.lock:
            self._sessions.append(session_id)

    def node_states(self) -> dict[str, str]:
        with self.lock:
            return {name: sight.state for name, sight in self._last_node.items()}

    def latest_stats(self) -> dict[str, float]:
        with self.lock:
            return dict(self.stats[-1][1]) if self.stats else {}

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            routing_id = f"chaos-{secrets.token_hex(8)}-{attempt}".encode()
            sock = connect_dealer(self.endpoint, routing_id)
            try:
                reason = self._connection(sock)
            finally:
                sock.close(0)
            with self.lock:
                self.connections.append((time.time(), f"lost: {reason}"))
            self._stop.wait(0.2)

    def _send(self, sock: zmq.Socket[bytes], message: fe.Message) -> int | None:
        """Send without waiting; the request id, or None if no connection takes it now."""
        message.request_id = next(self._ids)
        try:
            sock.send_multipart(encode(message), zmq.NOBLOCK)
        except zmq.Again:
            return None
        return message.request_id

    def _connection(self, sock: zmq.Socket[bytes]) -> str:
        decode = server_reply_codec().decode
        subscribed = False
        watched: set[str] = set()
        self._watch_ids = {}
        last_heard = last_ping = time.monotonic()
        next_stats = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if not subscribed:
                hello = fe.Hello(protocol_version=PROTOCOL_VERSION, client="chaos-observer")
                subscribe = fe.SubscribeCluster(interval=0.25, events=EVENTS_ASKED, closed_sessions=0)
                subscribed = self._send(sock, hello) is not None and self._send(sock, subscribe) is not None
            with self.lock:
                sessions = [s for s in self._sessions if s not in watched] if subscribed else []
            for session_id in sessions:
                request_id = self._send(sock, fe.WatchTasks(session_id=session_id, include_data=False))
                if request_id is not None:
                    self._watch_ids[request_id] = session_id
                    watched.add(session_id)
            if now - last_ping >= PING_EVERY:
                self._send(sock, fe.Ping())
                last_ping = now
            if now >= next_stats:
                self._send(sock, fe.GetStats())
                next_stats = now + self.stats_every
            if now - last_heard > self.silence:
                return f"no message for {now - last_heard:.1f}s"
            if not sock.poll(100):
                continue
            while sock.poll(0):
                try:
                    message = decode(sock.recv_multipart())
                except FrameError as exc:
                    return f"bad message: {exc.message}"
                last_heard = time.monotonic()
                self._take(message)
        return "stopped"

    def _take(self, message: fe.Message) -> None:
        received = time.time()
        with self.lock:
            match message:
                case fe.Welcome():
                    self.connections.append((received, "connected"))
                case fe.ClusterSnapshot() | fe.ClusterUpdates():
                    self._nodes(message.nodes, received)
                    self._events(message.events, received)
                case fe.TaskUpdates():
                    session_id = self._watch_ids.get(message.request_id)
                    if session_id is not None:
                        self._tasks(session_id, message.tasks, received)
                case fe.StatsReply():
                    self.stats.append((received, dict(message.stats)))
                case _:
                    pass

    def _nodes(self, nodes: list[Node], received: float) -> None:
        for node in nodes:
            sight = NodeSight(received, node.name, str(node.state), node.epoch, str(node.connection or ""))
            last = self._last_node.get(node.name)
            if last is None or (last.state, last.epoch, last.connection) != (
                sight.state,
                sight.epoch,
                sight.connection,
            ):
                self.nodes.append(sight)
                self._last_node[node.name] = sight

    def _events(self, events: list[fe.ClusterEvent], received: float) -> None:
        if len(events) >= 200:
            self.full_pushes += 1
        for event in events:
            seen = SeenEvent(event.time / 1000, event.kind, event.subject, event.message)
            self.events.setdefault(seen, received)

    def _tasks(self, session_id: str, tasks: list[Task], received: float) -> None:
        for task in tasks:
            key = (session_id, task.id)
            records = self.terminal.get(key)
            if task.state.is_terminal:
                record = TerminalRecord(str(task.state), task.completion_time or 0, task.message or "")
                if records is None:
                    self.terminal[key] = [record]
                elif record not in records:
                    records.append(record)
            elif records:
                self.reopened.append((session_id, task.id, str(task.state), received))
