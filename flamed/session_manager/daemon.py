"""The session-manager daemon: receive -> core -> persist -> send.

One loop owns the frontend ROUTER (clients) and the backend ROUTER (executor managers). Each
turn it drains both sockets (backend first, so heartbeats are never queued behind client
traffic), feeds every decoded message to the `Controller`, and at the end of the turn flushes:
the records the turn produced are appended to the log and committed with one fsync (group
commit), and only then are the replies, pushes and node messages sent. A frame that does not
decode is answered with a typed error and counted; it never stops the loop.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from flamed.config import Config
from flamed.core.controller import Controller, CoreConfig, Now, Outbox
from flamed.core.records import AnyRecord
from flamed.session_manager.apps import DEFAULT_APPLICATIONS
from flamed.transport import Loop, bind_router, close, drain, try_send
from protocol import codec
from protocol.codec import FrameError
from protocol.resources import parse_resreq

log = logging.getLogger("flamed.session_manager")


@dataclass
class SessionManagerOptions:
    config: Config
    frontend: str
    backend: str
    state_dir: Path | None = None


class RecordLog:
    """Where the records of a turn go. In-memory by default; `flamed.storage` provides the
    durable one. `commit` raises on failure, leaving the log as before the batch."""

    def append(self, payload: bytes) -> None:
        pass

    def commit(self, now: float) -> None:
        pass

    def stats(self) -> dict[str, float | int | str]:
        return {}

    def close(self) -> None:
        pass


def core_config(config: Config) -> CoreConfig:
    return CoreConfig(
        default_resreq=parse_resreq(config.cluster.resreq),
        heartbeat_interval=config.recovery.heartbeat_interval,
        heartbeat_liveness=config.recovery.heartbeat_liveness,
        drain_timeout=config.recovery.drain_timeout,
        task_retry_limit=config.recovery.task_retry_limit,
        session_bind_retry_limit=config.recovery.session_bind_retry_limit,
        schedule_interval=config.cluster.schedule_interval,
        dispatch_depth=config.cluster.dispatch_depth,
        max_sessions=config.limits.max_sessions,
        max_tasks_per_session=config.limits.max_tasks_per_session,
        cluster_name=config.cluster.name,
    )


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class SessionManager:
    def __init__(self, options: SessionManagerOptions, record_log: RecordLog | None = None) -> None:
        self.options = options
        self.loop = Loop()
        self.log = record_log or RecordLog()
        self.controller = Controller(core_config(options.config))
        self._encoder = msgspec.msgpack.Encoder()
        self._client_codec = codec.client_request_codec()
        self._node_codec = codec.node_message_codec()
        max_size = options.config.limits.max_message_size
        self.frontend = bind_router(options.frontend, max_size)
        self.backend = bind_router(options.backend, max_size)
        self._tick_timer = self.loop.call_at(0.0, self._tick)
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._wakeup_r.setblocking(False)
        self._wakeup_w.setblocking(False)
        self._stop_requested = False

    def now(self) -> Now:
        return Now(mono=self.loop.now(), wall=wall_ms())

    # ------------------------------------------------------------------ lifecycle

    def start(self, replay: Callable[[Controller], None] | None = None) -> None:
        """Replay durable state (if any), restore node links, register default apps."""
        if replay is not None:
            replay(self.controller)
        now = self.now()
        self.controller.links.restore(now)
        for name, spec in DEFAULT_APPLICATIONS.items():
            self.controller.register_default_application(name, spec, now)
        self.loop.add_reader(self.backend, self._on_backend)
        self.loop.add_reader(self.frontend, self._on_frontend)
        self.loop.add_reader(self._wakeup_r.fileno(), self._on_wakeup)
        self.loop.add_turn_end(self._flush)
        self._flush()

    def install_signal_handlers(self) -> None:
        signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop_requested = True

    def _on_wakeup(self) -> None:
        try:
            while self._wakeup_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        if self._stop_requested:
            log.info("stopping on signal")
            self.loop.stop()

    def run(self) -> int:
        log.info("session manager ready: frontend %s, backend %s", self.options.frontend, self.options.backend)
        try:
            self.loop.run()
        finally:
            self.close()
        return 0

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        close(self.frontend)
        close(self.backend)
        self._wakeup_r.close()
        self._wakeup_w.close()
        self.log.close()

    # ------------------------------------------------------------------ receive

    def _on_backend(self) -> None:
        now = self.now()
        ctl = self.controller
        for frames in drain(self.backend):
            peer = frames[0]
            try:
                message = self._node_codec.decode(frames[1:])
            except FrameError as exc:
                log.warning("backend: bad frame from %r: %s", peer[:32], exc.message)
                ctl.reject_node_frame(peer, exc.code, exc.message)
                continue
            ctl.handle_node(peer, message, now)

    def _on_frontend(self) -> None:
        now = self.now()
        ctl = self.controller
        for frames in drain(self.frontend, limit=2000):
            peer = frames[0]
            try:
                request = self._client_codec.decode(frames[1:])
            except FrameError as exc:
                log.info("frontend: bad frame from %r: %s", peer[:32], exc.message)
                ctl.reject_client_frame(peer, exc.code, exc.message, codec.peek_request_id(frames[1:]))
                continue
            ctl.handle_client(peer, request, now)

    def _tick(self) -> None:
        self.controller.tick(self.now())

    # ------------------------------------------------------------------ flush

    def _flush(self) -> None:
        ctl = self.controller
        outbox = ctl.flush(self.now())
        self._persist(outbox.records)
        self._send(outbox)
        deadline = ctl.next_deadline()
        if deadline != self._tick_timer.when or self._tick_timer.cancelled:
            self._tick_timer.cancel()
            self._tick_timer = self.loop.call_at(deadline, self._tick)

    def _persist(self, records: list[AnyRecord]) -> None:
        if not records:
            return
        encode = self._encoder.encode
        for record in records:
            self.log.append(encode(record))
        self.log.commit(self.loop.now())

    def _send(self, outbox: Outbox) -> None:
        header = codec.HEADER
        encode = self._encoder.encode
        for peer, node_message in outbox.node_messages:
            if not try_send(self.backend, [peer, header, encode(node_message)]):
                log.debug("backend: peer %r unreachable", peer[:32])
        for peer, reply in outbox.replies:
            if not try_send(self.frontend, [peer, header, encode(reply)]):
                self.controller.peer_unreachable(peer)
