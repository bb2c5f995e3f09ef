"""ZeroMQ sockets with the options every link here needs (ZEROMQ.md sections 3 and 7).

- LINGER 0 everywhere: a daemon never hangs at exit on an absent peer.
- ROUTER: ROUTER_MANDATORY (a vanished peer raises instead of silently dropping), finite HWMs,
  MAXMSGSIZE from config (an oversized message drops that connection, never the daemon).
- DEALER: a stable routing id (never starting with 0x00), IMMEDIATE (no queueing to a peer
  that is not connected), reconnect backoff from the caller's `Reconnect` (the daemons and the
  SDK pass `recovery.reconnect_backoff_min/max`, so a link comes back as fast as the recovery
  config promises; 100 ms doubling to 5 s for callers without a config).
- ZMTP heartbeats on, to clear dead TCP connections; liveness of the *application* is decided
  by application heartbeats (see protocol/backend.py), which ZMTP cannot see. Except on a
  ROUTER of thousands of peers (the backend): there TCP keepalive and the TCP user timeout
  clear dead connections instead (`bind_router(zmtp_pings=False)`), because libzmq cancels a
  PING's timeout timer by walking every timer of its I/O thread: a cost of peers squared.
- A routing id is not a credential (ZEROMQ.md 3.2, 4.4): ROUTER_HANDOVER gives a connected
  peer's traffic to whoever connects with its id, so it is only for links whose ids nobody
  else can learn. The backend does without it: each executor-manager connection has a fresh
  random id, and the executor manager, not ZMTP, decides when to replace its connection
  (`connect_dealer(zmtp_timeout=False)` against `bind_router(zmtp_pings=False)`), so a DEALER
  never comes back under an id the ROUTER may still hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeAlias

import zmq

from flamed.transport.security import ClientCurve, ServerCurve, make_client, make_server, user_id
from protocol.codec import DEFAULT_MAX_MESSAGE_SIZE

Frames = list[bytes]
#: A socket this package made; other modules hold and pass it, and call only its methods.
Socket: TypeAlias = zmq.Socket[bytes]
#: What a socket call raises when the endpoint cannot be used (e.g. EADDRINUSE on bind).
TransportError: TypeAlias = zmq.ZMQError

_context: zmq.Context[zmq.Socket[bytes]] | None = None


@dataclass(frozen=True)
class Reconnect:
    """How a DEALER retries a lost or refused connection: after `first` seconds, doubling (with
    ZeroMQ's jitter) up to `longest`. The longest wait bounds how late a peer that is back is
    seen again, so it must follow `recovery.reconnect_backoff_max` (a session manager's drain
    after a restart is sized on it)."""

    first: float = 0.1
    longest: float = 5.0

    @classmethod
    def backoff(cls, backoff_min: float, backoff_max: float) -> Reconnect:
        """From the recovery config: the first retry no later than 100 ms (a refused connect
        costs nothing), never beyond `backoff_max`."""
        longest = max(backoff_max, 0.001)
        return cls(first=min(0.1, backoff_min, longest), longest=longest)


def context() -> zmq.Context[zmq.Socket[bytes]]:
    """The process-wide context (fork-aware)."""
    global _context  # noqa: PLW0603 - one context per process is the pyzmq rule
    if _context is None or _context.closed:
        _context = zmq.Context.instance()
    return _context


#: ZMTP heartbeats: a PING every `ZMTP_INTERVAL` seconds; a connection silent for
#: `ZMTP_TIMEOUT` after one is dropped (and the peer drops it after as long a silence).
ZMTP_INTERVAL, ZMTP_TIMEOUT = 2.0, 6.0
#: TCP keepalive of a ROUTER without PINGs: probes after `KEEPALIVE_IDLE` seconds without
#: traffic, `KEEPALIVE_PROBES` of them `KEEPALIVE_INTERVAL` apart; data unacknowledged for
#: `ZMTP_TIMEOUT` also drops the connection (TCP_USER_TIMEOUT).
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES = 2, 2, 2


def start_context() -> None:
    """Start the process-wide context's threads now rather than at the first socket (ZeroMQ
    starts them then): for a process with time to spare before it connects (a zygote's spare)."""
    context().socket(zmq.DEALER).close(linger=0)


def _common(sock: zmq.Socket[bytes], max_message_size: int, hwm: int = 100_000) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_size)
    sock.setsockopt(zmq.HEARTBEAT_IVL, round(ZMTP_INTERVAL * 1000))
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, round(ZMTP_TIMEOUT * 1000))
    sock.setsockopt(zmq.HEARTBEAT_TTL, round(ZMTP_TIMEOUT * 1000))


def _tcp_liveness(sock: zmq.Socket[bytes]) -> None:
    """Dead TCP peers found by the kernel instead of ZMTP PINGs (kernel timers cost nothing per
    peer in this process): keepalive probes on an idle connection, the user timeout on one
    whose data goes unacknowledged. Without effect on ipc:// (a peer that dies closes it)."""
    sock.setsockopt(zmq.HEARTBEAT_IVL, 0)
    sock.setsockopt(zmq.HEARTBEAT_TTL, 0)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, KEEPALIVE_IDLE)
    sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, KEEPALIVE_INTERVAL)
    sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, KEEPALIVE_PROBES)
    sock.setsockopt(zmq.TCP_MAXRT, round(ZMTP_TIMEOUT * 1000))


def bind_router(
    endpoint: str,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    *,
    handover: bool = False,
    curve: ServerCurve | None = None,
    zmtp_pings: bool = True,
    sndhwm: int | None = None,
    rcvhwm: int | None = None,
    hwm: int = 100_000,
) -> zmq.Socket[bytes]:
    """A ROUTER bound on `endpoint`; raises zmq.ZMQError (e.g. EADDRINUSE) on failure.

    `handover`: a new connection with a routing id already connected takes it over (instead of
    being ignored, for as long as it stays connected: a peer that reconnected while this side
    was paused would never be heard again). Whoever knows a peer's id takes its traffic, so
    only for peers whose ids nobody else can learn (random, never shown to anyone).
    `curve`: be a CURVE server in that ZAP domain (security.py); peers need an allowed key.
    `zmtp_pings=False`: no ZMTP PINGs, so peers are never asked to drop the connection when
    this side is silent (a pause), for peers that replace their connection themselves (see the
    module rules); dead TCP peers are found by keepalive probes and the user timeout (about
    `ZMTP_TIMEOUT` of silence) instead. For a ROUTER of many peers: libzmq cancels the timeout
    timer of each PING answered by walking all its I/O thread's timers, so PINGs cost peers
    squared (at 5,000 executor managers, 64% of the I/O thread's time was in that walk).
    `sndhwm`: messages queued per peer before a send raises EAGAIN (default `hwm`); the
    worst case of memory is about peers x SNDHWM x message size.
    `rcvhwm`: messages read ahead per peer before ZeroMQ stops reading its connection (default
    `hwm`); a flood then waits in the peer's TCP buffers, not in this process.
    `hwm`: messages queued per peer each way (the object cache, whose messages are chunks of up
    to a MiB, keeps it low so that a peer that does not read cannot pile up gigabytes)."""
    sock = context().socket(zmq.ROUTER)
    _common(sock, max_message_size, hwm)
    if not zmtp_pings:
        _tcp_liveness(sock)
    if sndhwm is not None:
        sock.setsockopt(zmq.SNDHWM, sndhwm)
    if rcvhwm is not None:
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
    if curve is not None:
        make_server(sock, curve)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    if handover:
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError:
        sock.close(0)
        raise
    return sock


def connect_dealer(
    endpoint: str,
    routing_id: bytes,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    curve: ClientCurve | None = None,
    *,
    monitor: int = 0,
    zmtp_timeout: bool = True,
    hwm: int = 100_000,
    reconnect: Reconnect | None = None,
) -> zmq.Socket[bytes]:
    """A DEALER connected to `endpoint` with the given routing id (a CURVE client with `curve`).

    `monitor`: socket events to watch (zmq.EVENT_*), attached before connecting so that not even
    the first connection is missed; `sock.get_monitor_socket()` then returns that monitor.
    `zmtp_timeout=False`: never drop the connection for ZMTP silence (and so never reconnect it
    under the same id while the peer may still hold the old one); the caller watches the link
    with application heartbeats and replaces the socket when it is dead.
    `reconnect`: the retry timing of the connection (default `Reconnect()`)."""
    if not routing_id or routing_id[0] == 0:
        raise ValueError("a routing id must be non-empty and must not start with a zero byte")
    sock = context().socket(zmq.DEALER)
    _common(sock, max_message_size, hwm)
    if not zmtp_timeout:
        sock.setsockopt(zmq.HEARTBEAT_IVL, 0)
    if curve is not None:
        make_client(sock, curve)
    sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    reconnect = reconnect or Reconnect()
    first_ms = max(1, round(reconnect.first * 1000))
    sock.setsockopt(zmq.RECONNECT_IVL, first_ms)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, max(first_ms, round(reconnect.longest * 1000)))
    if monitor:
        sock.get_monitor_socket(monitor)
    sock.connect(endpoint)
    return sock


#: `connect_dealer(monitor=CONNECTION_UP)`: watch for connections that are up and usable (the
#: ZMTP handshake, and CURVE's, done); count them with `connections_up`.
CONNECTION_UP = zmq.EVENT_HANDSHAKE_SUCCEEDED


def connections_up(monitor: zmq.Socket[bytes], limit: int = 1_000) -> int:
    """How many connections came up since the last call, from the monitor `connect_dealer`
    attached (`sock.get_monitor_socket()`); reads every event ready, without blocking."""
    count = 0
    for _ in range(limit):
        try:
            frames = monitor.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            break
        event = int.from_bytes(frames[0][:2], "little") if frames and len(frames[0]) >= 2 else 0
        count += event == CONNECTION_UP
    return count


def close_monitored(sock: zmq.Socket[bytes], monitor: zmq.Socket[bytes], linger: int = 0) -> None:
    """Close a socket and the monitor attached to it."""
    sock.disable_monitor()
    monitor.close(0)
    sock.close(linger)


#: Flags as plain ints: pyzmq's flag enums cost an enum operation per frame (`SNDMORE | flags`
#: in `send_multipart`, `RCVMORE` in `recv_multipart`), a third of a heartbeat's receive and
#: send at 10,000 nodes.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
#: pyzmq's send without its Python layer (`zmq.Socket.send` looks at two DRAFT-only arguments,
#: then calls this): the session manager sends each of 10,000 nodes a heartbeat a second.
_send_frame = zmq.backend.Socket.send


def drain(sock: zmq.Socket[bytes], limit: int = 10_000) -> Iterator[Frames]:
    """Yield every message ready on `sock` without blocking (at most `limit`)."""
    recv, more = sock.recv, sock.get
    for _ in range(limit):
        try:
            frames = [recv(_NOBLOCK)]
        except zmq.Again:
            return
        while more(_RCVMORE):  # the rest of a message is there once its first frame is
            frames.append(recv(_NOBLOCK))
        yield frames


def drain_with_user(sock: zmq.Socket[bytes], limit: int = 10_000) -> Iterator[tuple[str, Frames]]:
    """Like `drain`, with the User-Id the ZAP handler gave the sender ("" without CURVE)."""
    for _ in range(limit):
        try:
            parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        yield user_id(parts[0]), [part.bytes for part in parts]


def readable(sock: zmq.Socket[bytes]) -> bool:
    return bool(int(sock.get(_EVENTS)) & _POLLIN)


def try_send(sock: zmq.Socket[bytes], frames: Frames) -> bool:
    """Send without blocking; False if the peer is unknown/gone (ROUTER) or its queue is full."""
    if not frames:
        return True
    send, more, last = _send_frame, _NOBLOCK | _SNDMORE, frames[-1]
    try:
        # Atomic as `send_multipart`: once the first frame is taken, so is the whole message.
        for i in range(len(frames) - 1):
            send(sock, frames[i], more)
        send(sock, last, _NOBLOCK)
    except zmq.Again:
        return False
    except zmq.ZMQError as exc:
        if exc.errno == zmq.EHOSTUNREACH:
            return False
        raise
    return True


def close(sock: zmq.Socket[bytes]) -> None:
    sock.close(0)
