"""The object-cache daemon (`flamed object-cache`): one loop, one ROUTER, one state directory.

Each turn it drains the ROUTER, answers every request in order (requests.py: the index decides,
the files are written, then the reply goes), and runs its timers: dropping stalled uploads and
asking the session manager about deleted sessions (sessions.py). At start it scans the state
directory (storage/objects.py): every part it acknowledged before a crash is there, torn files
are set aside, and the index is rebuilt before the socket is bound, so a client never sees a
half-loaded cache. A frame that does not decode is answered with a typed error and counted.

Sockets: the ROUTER uses low high-water marks (a message may be a MiB: a peer that does not read
must not pile up gigabytes in the queue) and, with `[security] curve`, is a CURVE server in the
`clients` domain: the session manager's server key and its client allow-list, so a cluster has
one set of keys. ZAP checks a key at the handshake only; as the session manager does, every
request is checked again against the list as it stands (re-read when it changes), so a revoked
key is refused (`Unauthorized`) on the connection it already has. Replies that cannot be
queued (HWM reached, peer gone) are dropped: the client times out and asks again, which every
request here allows.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import msgspec

from flamed.config import Config
from flamed.notify import Notifier
from flamed.object_cache.index import Index
from flamed.object_cache.requests import Requests
from flamed.object_cache.sessions import SessionCheck
from flamed.storage.objects import ObjectFiles
from flamed.transport import (
    Loop,
    SignalInbox,
    bind_router,
    close,
    context,
    drain,
    drain_with_user,
    security,
    try_send,
)
from protocol import cache as ca
from protocol import codec
from protocol.codec import FrameError
from protocol.errors import ErrorCode

log = logging.getLogger("flamed.object_cache")

#: Messages queued per peer each way (chunks are up to `cache.chunk_size`).
CACHE_HWM = 64


@dataclass
class ObjectCacheOptions:
    config: Config
    #: what to bind (already resolved from --bind, cache.bind, cache.endpoint)
    bind: str
    state_dir: Path
    #: the session manager's frontend, asked about deleted sessions (None: never ask)
    frontend: str | None = None
    config_path: str | None = None
    log_level: str | None = None
    log_format: str | None = None


class ObjectCache:
    def __init__(self, options: ObjectCacheOptions, files: ObjectFiles) -> None:
        """Loads the index from `files` (which it then owns), then binds. Raises StorageError,
        SecurityError or zmq.ZMQError (the caller reports them)."""
        self.options = options
        self.files = files
        # a chunk plus its envelope must stay under the sockets' MAXMSGSIZE
        chunk = min(options.config.cache.chunk_size, options.config.limits.max_message_size // 2)
        cache = msgspec.structs.replace(options.config.cache, chunk_size=chunk)
        self.loop = Loop()
        self.notifier = Notifier()
        self.notifier.status(f"scanning {options.state_dir}")
        scan = files.scan()
        self.index = Index(cache.max_bytes, cache.max_object_size, cache.max_deltas)
        self.index.load(scan.parts)
        self.index.live = set(scan.live)
        self.index.counters["broken_files"] = len(scan.broken)
        log.info(
            "object cache: %d objects, %d bytes in %s (%d torn or damaged files set aside, %d leftovers removed)",
            len(self.index),
            self.index.bytes,
            options.state_dir,
            len(scan.broken),
            scan.removed,
        )
        self.requests = Requests(cache, files, self.index)
        self._codec = ca.request_codec()
        self._encoder = msgspec.msgpack.Encoder()
        sec = options.config.security
        curve = security.server_curve(sec, security.CLIENTS)
        self.zap = security.zap_handler(context(), sec)
        try:
            self.router = bind_router(
                options.bind, options.config.limits.max_message_size, handover=True, curve=curve, hwm=CACHE_HWM
            )
        except BaseException:
            if self.zap is not None:
                self.zap.close()
            raise
        self.sessions: SessionCheck | None = None
        if options.frontend and cache.session_check_interval > 0:
            self.sessions = SessionCheck(
                self.loop, options.frontend, security.client_curve(sec), self.requests, cache.session_check_interval
            )
        self.signals = SignalInbox(self.loop, self._on_signal)
        self.bad_frames = 0

    def start(self) -> None:
        if self.zap is not None:
            self.loop.add_reader(self.zap.sock, self.zap.on_readable)
        self.loop.add_reader(self.router, self._on_requests)
        self.loop.call_every(1.0, lambda: self.requests.expire_uploads(self.loop.now()))
        self.notifier.ready(self.status_line())
        if self.notifier.enabled:
            self.loop.call_every(self.notifier.alive_every(), lambda: self.notifier.alive(self.status_line()))

    def status_line(self) -> str:
        return f"serving; {len(self.index)} objects, {self.index.bytes} bytes, {len(self.requests.uploads)} uploads"

    def install_signal_handlers(self) -> None:
        self.signals.install((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGHUP:
            self._reload()
            return
        log.info("object cache: stopping on signal")
        self.notifier.stopping("stopping")
        self.loop.stop()

    def _reload(self) -> None:
        from flamed.config import ConfigError, load_config
        from flamed.logs import setup_logging

        try:
            config = load_config(self.options.config_path)
        except ConfigError as exc:
            log.error("reload: %s; keeping the running config", exc)
        else:
            setup_logging(self.options.log_level or config.log.level, self.options.log_format or config.log.format)
        if self.zap is not None:
            self.zap.reload()

    def run(self) -> int:
        log.info("object cache ready at %s (state %s)", self.options.bind, self.options.state_dir)
        try:
            self.loop.run()
        finally:
            self.close()
        return 0

    def close(self) -> None:
        for upload in list(self.requests.uploads.values()):
            self.requests.forget_peer(upload.peer)
        if self.sessions is not None:
            self.sessions.close()
        self.signals.close()
        self.notifier.close()
        close(self.router)
        if self.zap is not None:
            self.zap.close()
        self.files.close()

    def _decode(self, frames: list[bytes]) -> ca.CacheRequest:
        try:
            return self._codec.decode(frames)
        except RecursionError:
            # msgspec recurses into a deeply nested value it skips (an unknown field): issue 14
            # makes protocol.codec turn this into a FrameError for every link; until then, here.
            raise FrameError(ErrorCode.BadMessage, "malformed payload: nested too deeply") from None

    @staticmethod
    def _request_id(frames: list[bytes]) -> int:
        try:
            return codec.peek_request_id(frames)
        except RecursionError:  # as in _decode
            return 0

    def _on_requests(self) -> None:
        now = self.loop.now()
        encode = self._encoder.encode
        allow = self.zap.lists[security.CLIENTS] if self.zap is not None else None
        received = (
            drain_with_user(self.router, 1000) if allow is not None else (("", f) for f in drain(self.router, 1000))
        )
        for user, frames in received:
            peer = frames[0]
            if allow is not None:
                # The list as it stands when this message is read (one stat): a request sent
                # after a key file was removed is refused even if this turn began before that.
                allow.refresh()
            if allow is not None and allow.name_of(user) is None:
                self.index.counters["unauthorized_requests"] += 1
                self.requests.forget_peer(peer)
                reply: ca.Message = ca.Error(
                    code=ErrorCode.Unauthorized, message="this key is not (or no longer) in the clients allow-list"
                )
                reply.request_id = self._request_id(frames[1:])
                try_send(self.router, [peer, codec.HEADER, encode(reply)])
                continue
            try:
                request = self._decode(frames[1:])
            except FrameError as exc:
                self.bad_frames += 1
                self.index.counters["bad_frames"] += 1
                log.info("bad frame from %r: %s", peer[:32], exc.message)
                reply = ca.Error(code=exc.code, message=exc.message)
                reply.request_id = self._request_id(frames[1:])
            else:
                reply = self.requests.handle(peer, request, now)
                reply.request_id = request.request_id
            if not try_send(self.router, [peer, codec.HEADER, encode(reply)]):
                self.index.counters["replies_dropped"] += 1
                self.requests.forget_peer(peer)
