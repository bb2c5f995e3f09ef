"""Prometheus text exposition (format 0.0.4), served from the daemon's own loop.

Why on the loop and not `http.server` in a thread: the numbers live in single-threaded state
(the controller's counters, the storage stats) that only the loop may touch; a thread would
need a lock on every hot path or would read torn values. Served from the loop, a scrape is one
more reader callback: the listening socket and every connection are non-blocking, a request is
at most 8 KiB, and the reply (a few KiB) fits the kernel's send buffer, so a slow or hostile
scraper can never stall the loop. It also means a scrape fails when the loop is wedged, which
is what an operator wants to see. No client library: the format is a few lines of text (HELP,
TYPE, samples).

Nor can idle or trickling sockets hold the endpoint: a connection has `REQUEST_DEADLINE`
seconds for its whole request, counted from the accept (bytes that trickle in do not renew
it), and at `MAX_CONNECTIONS` a newcomer evicts the oldest connection instead of being refused.
The oldest is first read once more and answered if its request is complete, so a real scrape
waiting its turn is served, not dropped; a scraper sends its request as soon as it connects,
so only a socket that holds a slot without one loses it.

Naming: every metric is prefixed `flame_`; values whose stats key ends in `_total` are
counters, the others gauges; `tasks_<state>`, `executors_<state>`, `nodes_<state>` become one
gauge each with a `state` label.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable, Mapping

from flamed.config import ConfigError
from flamed.transport import Loop, Timer
from protocol.types import ExecutorState, NodeState, TaskState

log = logging.getLogger("flamed.metrics")

_MAX_REQUEST = 8192
#: Seconds a connection has for its whole request, from the accept (never renewed).
REQUEST_DEADLINE = 2.0
#: Connections held at once; one more evicts the oldest.
MAX_CONNECTIONS = 32
_BACKLOG = 128
#: stats-key family -> lower-case state -> the state as Flame spells it (the label value)
_STATES: dict[str, dict[str, str]] = {
    "tasks": {s.lower(): s.value for s in TaskState},
    "executors": {s.lower(): s.value for s in ExecutorState},
    "nodes": {s.lower(): s.value for s in NodeState},
}


#: Session-manager counters shown at 0 before their first increment (Prometheus wants a
#: series to exist from the start so `rate()` sees its first step).
SESSION_MANAGER_COUNTERS = (
    "client_requests",
    "client_errors",
    "bad_client_frames",
    "bad_node_frames",
    "registrations",
    "heartbeats",
    "node_messages",
    "node_message_gaps",
    "nodes_silent",
    "node_cleanups",
    "node_drains",
    "node_undrains",
    "stale_completions_rejected",
    "stale_node_messages",
    "stale_reports",
    "tasks_created",
    "tasks_completed",
    "tasks_retried",
    "tasks_returned",
    "task_recalls",
    "tasks_failed_retry_limit",
    "storage_write_failures",
    "session_manager_stalls",
    "registrations_superseded",
    "create_tasks_repeated",
    "sessions_expired",
    "tasks_expired",
    "sessions_closed_idle",
)


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (all interfaces) or `PORT` (loopback) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    elif not host:
        host = "0.0.0.0"  # ":PORT" asks for every interface explicitly
    host = host.strip("[]")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--metrics: {text!r} is not an address; expected HOST:PORT, :PORT or PORT")
    return host, int(port)


def render(stats: Mapping[str, float], prefix: str = "flame", help_texts: Mapping[str, str] | None = None) -> str:
    """Stats (as `Controller.stats()` and `GetStats` name them) as Prometheus text."""
    helps = help_texts or {}
    lines: list[str] = []
    labelled: dict[str, dict[str, float]] = {}
    for key in sorted(stats):
        family, _, state = key.partition("_")
        if family in _STATES and not key.endswith("_total") and state in _STATES[family]:
            labelled.setdefault(family, {})[state] = stats[key]
    for family, values in sorted(labelled.items()):
        name = f"{prefix}_{family}"
        lines.append(f"# HELP {name} {family.capitalize()} by state.")
        lines.append(f"# TYPE {name} gauge")
        for state, label in _STATES[family].items():
            lines.append(f'{name}{{state="{label}"}} {_number(values.get(state, 0.0))}')
    for key in sorted(stats):
        family, _, state = key.partition("_")
        if family in _STATES and not key.endswith("_total") and state in _STATES[family]:
            continue
        name = f"{prefix}_{_clean(key)}"
        kind = "counter" if key.endswith("_total") else "gauge"
        lines.append(f"# HELP {name} {helps.get(key, key.replace('_', ' ') + '.')}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name} {_number(stats[key])}")
    return "\n".join(lines) + "\n"


def _clean(key: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in key)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class MetricsServer:
    """HTTP/1.0 `GET /metrics` on `address`, answered from `loop` with `render(collect())`."""

    def __init__(self, loop: Loop, address: str, collect: Callable[[], Mapping[str, float]]) -> None:
        self.loop = loop
        self.collect = collect
        host, port = parse_address(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((host, port))
        except OSError as exc:
            self.listener.close()
            raise ConfigError(f"--metrics: cannot listen on {address}: {exc.strerror}") from None
        self.listener.listen(_BACKLOG)
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()[:2]
        self.scrapes = 0
        #: connections closed to make room for a newer one (idle or too slow with its request)
        self.evicted = 0
        #: connections closed at `REQUEST_DEADLINE` without a complete request
        self.timed_out = 0
        self._connections: dict[int, tuple[socket.socket, bytearray, Timer]] = {}  # oldest first
        loop.add_reader(self.listener.fileno(), self._accept)
        log.info("metrics on http://%s:%d/metrics", self.address[0], self.address[1])

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("metrics: accept failed: %s", exc)
                return
            self._make_room()
            conn.setblocking(False)
            fd = conn.fileno()
            timer = self.loop.call_later(REQUEST_DEADLINE, functools.partial(self._expire, fd))
            self._connections[fd] = (conn, bytearray(), timer)
            self.loop.add_reader(fd, functools.partial(self._read, fd))

    def _make_room(self) -> None:
        """At the cap, close the oldest connection, unless its request turns out complete on a
        last read (then it is answered, which frees its slot as well)."""
        while len(self._connections) >= MAX_CONNECTIONS:
            oldest = next(iter(self._connections))
            self._read(oldest)
            if oldest in self._connections:
                self.evicted += 1
                self._drop(oldest)

    def _expire(self, fd: int) -> None:
        if fd in self._connections:
            self.timed_out += 1
            self._drop(fd)

    def _read(self, fd: int) -> None:
        entry = self._connections.get(fd)
        if entry is None:
            return
        conn, buffer, _ = entry
        try:
            chunk = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(fd)
            return
        buffer.extend(chunk)
        if b"\r\n\r\n" not in buffer and b"\n\n" not in buffer:
            if len(buffer) > _MAX_REQUEST:
                self._reply(fd, "431 Request Header Fields Too Large", "request too large\n")
            return
        parts = bytes(buffer).split(b"\r\n", 1)[0].split()
        if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
            self._reply(fd, "405 Method Not Allowed", "only GET /metrics\n")
        elif parts[1].split(b"?", 1)[0] not in (b"/metrics", b"/"):
            self._reply(fd, "404 Not Found", "try /metrics\n")
        else:
            self.scrapes += 1
            body = render(self.collect())
            self._reply(fd, "200 OK", body, head=parts[0] == b"HEAD")

    def _reply(self, fd: int, status: str, body: str, head: bool = False) -> None:
        conn = self._connections[fd][0]
        payload = body.encode()
        header = (
            f"HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            conn.send(header + (b"" if head else payload))  # fits the send buffer; never waits
        except OSError as exc:
            log.debug("metrics: reply not sent: %s", exc)
        self._drop(fd)

    def _drop(self, fd: int) -> None:
        entry = self._connections.pop(fd, None)
        if entry is None:
            return
        conn, _, timer = entry
        timer.cancel()
        self.loop.remove_reader(fd)
        conn.close()

    def close(self) -> None:
        for fd in list(self._connections):
            self._drop(fd)
        self.loop.remove_reader(self.listener.fileno())
        self.listener.close()
