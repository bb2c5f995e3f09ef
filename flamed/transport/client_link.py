"""A client's DEALER to a session manager, for the one thread that owns it (the SDK's I/O thread).

`ClientLink` keeps the socket and its monitor together so that its owner never names ZeroMQ:
- `wait` polls the socket, its monitor and one file descriptor of the owner's (a wake-up pipe)
  at once, for at most a timeout, and says which of them are ready (`WOKEN`, `READABLE`,
  `EVENTS`); with `want_out` it also returns as soon as the socket can take a message;
- `send` never blocks: False when the peer cannot take the message now (no connection yet,
  since the socket is IMMEDIATE, or its queue is full), and the owner keeps it for later;
- `receive` yields every message ready, without blocking;
- `events` turns the monitor's events into `LinkEvent`s: connected, disconnected, and the
  security handshake's success or failure with why.

Rules: one owning thread; `wait` is the only call that blocks, and only for its timeout. The
socket options (routing id, IMMEDIATE, reconnect backoff, CURVE) are `connect_dealer`'s.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import recv_monitor_message

from flamed.transport.security import ClientCurve
from flamed.transport.sockets import Frames, Reconnect, connect_dealer
from protocol.codec import DEFAULT_MAX_MESSAGE_SIZE

#: `wait` results, as bits: the owner's fd was written, messages are ready, monitor events are.
WOKEN, READABLE, EVENTS = 1, 2, 4


class LinkEventKind(enum.Enum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    HANDSHAKE_SUCCEEDED = "handshake succeeded"
    HANDSHAKE_FAILED = "handshake failed"


@dataclass(frozen=True, slots=True)
class LinkEvent:
    kind: LinkEventKind
    #: for HANDSHAKE_FAILED: what failed, and ZeroMQ's error number
    detail: str = ""


_HANDSHAKE_FAILED: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol error in the handshake",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "authentication refused",
}
_KINDS: dict[int, LinkEventKind] = {
    zmq.EVENT_CONNECTED: LinkEventKind.CONNECTED,
    zmq.EVENT_DISCONNECTED: LinkEventKind.DISCONNECTED,
    zmq.EVENT_HANDSHAKE_SUCCEEDED: LinkEventKind.HANDSHAKE_SUCCEEDED,
}
_MONITORED = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
for _event in _HANDSHAKE_FAILED:
    _MONITORED |= _event


class ClientLink:
    def __init__(
        self,
        endpoint: str,
        routing_id: bytes,
        wake_fd: int,
        *,
        curve: ClientCurve | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        reconnect: Reconnect | None = None,
    ) -> None:
        """Connect to `endpoint` (the monitor is attached first, so no event is missed) and
        poll `wake_fd` beside the socket. Raises zmq.ZMQError (a `TransportError`) if the
        endpoint cannot be used."""
        self.endpoint = endpoint
        self._sock = connect_dealer(
            endpoint, routing_id, max_message_size, curve=curve, monitor=_MONITORED, reconnect=reconnect
        )
        self._monitor = self._sock.get_monitor_socket()
        self._wake_fd = wake_fd
        self._poller = zmq.Poller()
        self._poller.register(wake_fd, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._poller.register(self._sock, zmq.POLLIN)
        self._want_out = False

    def wait(self, timeout_ms: int, *, want_out: bool = False) -> int:
        """Block for at most `timeout_ms` until something is ready; the `WOKEN | READABLE |
        EVENTS` bits of what is. With `want_out`, also return when the socket can send."""
        if want_out != self._want_out:
            self._want_out = want_out
            self._poller.modify(self._sock, zmq.POLLIN | (zmq.POLLOUT if want_out else 0))
        ready = 0
        for source, _ in self._poller.poll(timeout_ms):
            if source is self._sock:
                ready |= READABLE
            elif source is self._monitor:
                ready |= EVENTS
            else:
                ready |= WOKEN
        return ready

    def send(self, frames: Frames) -> bool:
        """Queue `frames` without blocking (zero-copy); False if the peer cannot take them now."""
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        return True

    def receive(self, limit: int = 10_000) -> Iterator[Frames]:
        """Every message ready now (at most `limit`), without blocking."""
        recv = self._sock.recv_multipart
        for _ in range(limit):
            try:
                yield recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def events(self) -> list[LinkEvent]:
        """The monitor's events since the last call, oldest first (others are left out)."""
        out: list[LinkEvent] = []
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return out
            number = int(event["event"])
            kind = _KINDS.get(number)
            if kind is not None:
                out.append(LinkEvent(kind))
            elif number in _HANDSHAKE_FAILED:
                detail = f"{_HANDSHAKE_FAILED[number]}, error {event['value']}"
                out.append(LinkEvent(LinkEventKind.HANDSHAKE_FAILED, detail))

    def close(self) -> None:
        self._sock.disable_monitor()
        self._monitor.close(0)
        self._sock.close(0)
