"""The client's I/O thread: the one owner of the link to a session manager.

Callers never touch the socket. They hand commands (`commands`) to the thread through a locked
deque and wake it through a pipe (written only when the deque goes from empty to non-empty);
the thread sends, receives and completes `concurrent.futures.Future`s. Requests are pipelined
and matched by `request_id`. Each turn of the queue is coalesced into few `CreateTasks`
requests (`batching`); replies and `TaskUpdates` pushes are matched to futures and per-task
sinks (`inflight`), so there is no thread per task. The socket, its monitor and the wait on
both are the transport's (`flamed.transport.ClientLink`); this module keeps the loop, the
backlog of what the socket could not take yet, and the timers.

Liveness: the session manager drops the watches of a client it has not heard from for its
`client_ttl` (30 s), so while watches or streams are open the thread sends a `Ping` every
`ping_interval`. If nothing at all is heard for `timeout` seconds with watches open, their
sinks fail (streams stay: their owner decides, see `streams`). When the socket reconnects (a
restarted session manager has no watches), every watch and stream already sent is sent again
under its request id; the first push of a watch is the current state, so this is idempotent;
so is every `CreateTasks` still unanswered, under its idempotency key (a repeat creates
nothing), and every unanswered read or other repeatable call (`inflight.REPEATABLE`). The rest
(creating or deleting a session or an application) is not re-sent: one without a reply in
`timeout` seconds fails with "no reply from session manager".

Flow control: the thread never has more watches open (`CreateTasks{watch}` batches included)
than the session manager allows a client (`max_watches`, from its `Welcome`); creates beyond
wait in the thread (`InFlight.held`, `batching.release`) and go out as watches finish. Callers
never wait for it: `run()` returns its future at once.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import secrets
import threading
import time
from concurrent.futures import Future
from typing import Any

import msgspec

from flamed.client.batching import DEFAULT_MAX_WATCHES, create_request, hold, release, take_turn
from flamed.client.commands import STOP, Call, CloseStream, Create, OpenStream, ResendStream, Watch, fail_command
from flamed.client.errors import FlameError, FlameErrorCode, no_reply, unreachable
from flamed.client.futures import TaskFuture
from flamed.client.inflight import ActiveWatch, InFlight, PendingCall, PendingCreate, split_sinks
from flamed.client.sinks import Sink, WatchSinks
from flamed.client.streams import Stream
from flamed.transport import EVENTS, READABLE, WOKEN, ClientLink, ClientSettings, LinkEventKind, client_settings
from protocol import frontend as fe
from protocol.codec import DEFAULT_MAX_MESSAGE_SIZE, HEADER, FrameError, server_reply_codec

log = logging.getLogger("flamed.client")


class IoThread:
    """Owns the socket; every public method is safe to call from any thread."""

    def __init__(
        self,
        endpoint: str,
        timeout: float,
        ping_interval: float | None = None,
        config_path: str | None = None,
        connect_timeout: float | None = None,
        *,
        settings: ClientSettings | None = None,
    ) -> None:
        """`connect_timeout`: seconds to wait for a first connection before every call fails
        with "nothing answers at ..." (None: `client.connect_timeout` from the config).
        `settings`: what the config file says, when the caller has it already (else read from
        `config_path`)."""
        self.endpoint = endpoint
        self.config_path = config_path
        self.settings = settings
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval if ping_interval is not None else min(10.0, timeout / 3)
        #: open watches the session manager allows this client (its `Welcome` says; `Connection`
        #: sets it): creates that would open more wait (see "Flow control" above)
        self.max_watches = DEFAULT_MAX_WATCHES
        self._lock = threading.Lock()
        self._commands: collections.deque[object] = collections.deque()
        self._woken = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closed = False
        self._next_id = 0
        #: `CreateTasks` keys are this prefix + the request id: unique per connection object
        self._key_prefix = secrets.token_hex(8) + "-"
        self.max_message_size = DEFAULT_MAX_MESSAGE_SIZE  # from the config once the thread starts
        # thread-owned state
        self._in_flight = InFlight(endpoint)
        self._backlog: collections.deque[tuple[int, list[bytes]]] = collections.deque()
        self._codec = server_reply_codec()
        self._encoder = msgspec.msgpack.Encoder()
        self._last_heard = time.monotonic()
        self._next_ping = 0.0
        self._disconnected = False
        #: request id of the last `Ping`: no second one while it still waits in the backlog
        self._ping_id = 0
        #: a session manager answered (or completed a handshake) at least once
        self._contacted = False
        self._contact_deadline = float("inf")
        #: why the last security handshake failed, before any contact ("" if none did)
        self._handshake_failure = ""
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"flame-client-io {endpoint}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error

    # ------------------------------------------------------------ caller side

    def _submit(self, command: object) -> None:
        with self._lock:
            if self._closed:
                raise FlameError(FlameErrorCode.INVALID_STATE, f"the connection to {self.endpoint} is closed")
            self._commands.append(command)
            if not self._woken:
                self._woken = True
                self._wake()

    def call(self, message: fe.Message) -> Future[Any]:
        """Send `message`; the future gets the reply (an `Error` reply becomes FlameError)."""
        future: Future[Any] = Future()
        self._submit(Call(message, future))
        return future

    def create_tasks(
        self, session_id: str, inputs: list[bytes | None], sinks: list[Sink] | None = None
    ) -> Future[list[int]]:
        """Create tasks (coalesced with others of the session); with `sinks` (one per input),
        watch each created task and feed its updates to its sink."""
        future: Future[list[int]] = Future()
        self._submit(Create(session_id, inputs, future, sinks))
        return future

    def run(self, session_id: str, data: bytes | None) -> Future[Any]:
        """Create a task; the future completes as `complete_run` says."""
        future: TaskFuture[Any] = TaskFuture(session_id, data)
        self._submit(future)  # its own command (commands.py)
        return future

    def watch(self, session_id: str, sinks: WatchSinks) -> None:
        """Watch existing tasks; updates go to the sinks until each says it is done."""
        self._submit(Watch(session_id, sinks))

    def open_stream(self, stream: Stream) -> None:
        """Send the stream's request; everything under its request id goes to its sink until
        `close_stream` (see `streams`)."""
        self._submit(OpenStream(stream))

    def resend_stream(self, stream: Stream, request: fe.Message | None = None) -> None:
        """Send the stream's request again under its id (unless a copy still waits to be
        sent); with `request`, that one from now on (sent even if the old one waits)."""
        self._submit(ResendStream(stream, request))

    def close_stream(self, stream: Stream, farewell: fe.Message | None = None) -> None:
        """Forget the stream (later pushes under its id are dropped); send `farewell`, if
        given, as a call whose reply nobody waits for."""
        self._submit(CloseStream(stream, farewell))

    def close(self, wait: float = 2.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._commands.append(STOP)
            self._closed = True
            self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(wait)

    def _wake(self) -> None:
        # Called with the lock held, so the thread cannot close the pipe meanwhile.
        with contextlib.suppress(BlockingIOError):  # a full pipe holds wake-ups enough
            os.write(self._wake_w, b"x")

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------ thread side

    def _run(self) -> None:
        try:
            routing_id = b"c" + secrets.token_bytes(7)
            settings = self.settings or client_settings(self.endpoint, self.config_path)
            self.max_message_size = settings.max_message_size
            if self.connect_timeout is None:
                self.connect_timeout = settings.connect_timeout
            self._contact_deadline = time.monotonic() + self.connect_timeout
            self._link = ClientLink(
                self.endpoint, routing_id, self._wake_r, curve=settings.curve, reconnect=settings.reconnect
            )
        except BaseException as exc:
            self._start_error = FlameError(FlameErrorCode.INVALID_CONFIG, f"cannot connect to {self.endpoint}: {exc}")
            with self._lock:
                self._closed = True
                os.close(self._wake_r)
                os.close(self._wake_w)
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop()
        except Exception:
            log.exception("flame client I/O thread failed")
            raise
        finally:
            with self._lock:
                self._closed = True
            self._fail_everything(
                FlameError(FlameErrorCode.INVALID_STATE, f"the connection to {self.endpoint} is closed")
            )
            self._link.close()
            with self._lock:
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _loop(self) -> None:
        link = self._link
        while True:
            ready = link.wait(self._poll_timeout_ms(), want_out=bool(self._backlog))
            if ready & WOKEN and not self._take_commands():
                return
            if ready & READABLE:
                self._receive()
            if ready & EVENTS:
                self._on_link_events()
            held = self._in_flight.held
            if held and self._in_flight.watch_load() < self.max_watches:
                self._release_held()  # watches finished (or failed) since
            self._flush_backlog()
            self._check_time(time.monotonic())

    def _poll_timeout_ms(self) -> int:
        return 50 if self._backlog else 200

    def _take_commands(self) -> bool:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        with self._lock:
            commands, self._commands = self._commands, collections.deque()
            self._woken = False
        turn = take_turn(commands)
        for command in turn.others:
            if isinstance(command, Call):
                self._send_call(command)
            elif isinstance(command, Watch):
                self._start_watch(command.session_id, command.sinks)
            else:
                self._on_stream_command(command)
        if turn.creates:
            hold(self._in_flight.held, turn.creates)
            self._release_held()
        return not turn.stop

    def _release_held(self) -> None:
        """Send the held creates that fit under the watch limit (see `batching.release`)."""
        in_flight = self._in_flight
        room = self.max_watches - in_flight.watch_load()
        for session_id, batch in release(in_flight.held, room):
            self._send_create_batch(session_id, batch)

    def _request_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _enqueue(self, request_id: int, message: fe.Message) -> None:
        message.request_id = request_id
        payload = self._encoder.encode(message)
        if len(payload) > self.max_message_size:
            # The session manager would drop the connection without a word; say why here.
            error = FlameError(
                FlameErrorCode.INVALID_ARGUMENT,
                f"the {type(message).__name__} request is {len(payload):,} bytes, more than "
                f"limits.max_message_size ({self.max_message_size:,} bytes); send less at once",
            )
            self._in_flight.fail_pending(request_id, error)
            return
        self._backlog.append((request_id, [HEADER, payload]))

    def _send_call(self, call: Call) -> int:
        request_id = self._request_id()
        self._in_flight.pending[request_id] = PendingCall(call.future, time.monotonic() + self.timeout, call.message)
        self._enqueue(request_id, call.message)
        return request_id

    def _send_create_batch(self, session_id: str, parts: list[Create]) -> None:
        request_id = self._request_id()
        request = create_request(session_id, parts, f"{self._key_prefix}{request_id}")
        record = PendingCreate(session_id, parts, time.monotonic() + self.timeout, request)
        self._in_flight.add_create(request_id, record)
        self._enqueue(request_id, request)

    def _start_watch(self, session_id: str, sinks: WatchSinks, request_id: int | None = None) -> None:
        """Follow `sinks`: with `request_id`, under that `CreateTasks{watch}` (the server pushes
        already, no request goes out); without, with a new `WatchTasks`."""
        if not sinks:
            return
        watches = self._in_flight.watches
        if not watches:
            self._last_heard = max(self._last_heard, time.monotonic())
        if request_id is not None:
            watch = ActiveWatch(session_id, sinks)
            watch.sent = True
            watches[request_id] = watch
            return
        for chunk in split_sinks(sinks):
            request_id = self._request_id()
            watches[request_id] = ActiveWatch(session_id, chunk)
            self._enqueue(request_id, fe.WatchTasks(session_id=session_id, task_ids=sorted(chunk)))

    # ------------------------------------------------------------ streams

    def _on_stream_command(self, command: OpenStream | ResendStream | CloseStream) -> None:
        stream, streams = command.stream, self._in_flight.streams
        if isinstance(command, OpenStream):
            if not self._in_flight.watches and not streams:
                self._last_heard = max(self._last_heard, time.monotonic())
            stream.request_id = self._request_id()
            streams[stream.request_id] = stream
            self._send_stream(stream)
        elif isinstance(command, ResendStream):
            if streams.get(stream.request_id) is not stream:
                return  # closed meanwhile
            if command.request is not None:
                stream.request = command.request
                stream.queued = False  # the old copy may still go out: the new one replaces it
            self._send_stream(stream)
        else:
            streams.pop(stream.request_id, None)
            if command.farewell is not None:
                self._send_call(Call(command.farewell, None))

    def _send_stream(self, stream: Stream) -> None:
        if not stream.queued:
            stream.queued = True
            self._enqueue(stream.request_id, stream.request)

    def _flush_backlog(self) -> None:
        backlog = self._backlog
        send = self._link.send
        watches, pending, streams = self._in_flight.watches, self._in_flight.pending, self._in_flight.streams
        while backlog:
            request_id, frames = backlog[0]
            if not send(frames):
                return
            backlog.popleft()
            watch = watches.get(request_id)
            if watch is not None:
                watch.sent = True
            record = pending.get(request_id)
            if record is not None:
                record.sent = True
            if streams:
                stream = streams.get(request_id)
                if stream is not None and stream.queued:
                    stream.queued = False
                    stream.sent = True

    # ------------------------------------------------------------ replies

    def _receive(self) -> None:
        for frames in self._link.receive():
            self._last_heard = time.monotonic()
            self._contacted = True
            try:
                reply = self._codec.decode(frames)
            except FrameError as exc:
                log.warning("bad frame from session manager at %s: %s", self.endpoint, exc.message)
                continue
            opened = self._in_flight.dispatch(reply)
            if opened is not None:
                self._start_watch(opened.session_id, opened.sinks, opened.request_id)

    def _on_link_events(self) -> None:
        for event in self._link.events():
            if event.kind is LinkEventKind.HANDSHAKE_SUCCEEDED:
                self._contacted = True
            elif event.kind is LinkEventKind.HANDSHAKE_FAILED:
                self._handshake_failure = event.detail
            elif event.kind is LinkEventKind.DISCONNECTED:
                self._disconnected = True
            elif self._disconnected:  # CONNECTED again (the first one may precede the monitor)
                self._disconnected = False
                self._renew()

    def _renew(self) -> None:
        """After a reconnect: send again what `InFlight.renewals` says."""
        again = self._in_flight.renewals(self._request_id)
        log.info(
            "reconnected to session manager at %s; sending %d watches, streams and requests again",
            self.endpoint,
            len(again),
        )
        for request_id, message in again:
            self._enqueue(request_id, message)

    # ------------------------------------------------------------ timers

    def _check_time(self, now: float) -> None:
        if not self._contacted and (self._handshake_failure or now >= self._contact_deadline):
            # Nothing ever answered: say so now rather than after the request timeout (a wrong
            # endpoint, a session manager that is not running, a key it refuses). Once anything
            # answered, a silence is waited out for `timeout` as usual.
            self._in_flight.fail_all(self.unreachable_error())
            # Never sent: a request the caller saw fail must not go out later. Streams stay
            # (their owner waits for the session manager to come).
            streams = self._in_flight.streams
            self._backlog = collections.deque(entry for entry in self._backlog if entry[0] in streams)
        expired = self._in_flight.expired(now)
        if expired:
            error = self.no_reply_error()
            for request_id in expired:
                self._in_flight.fail_pending(request_id, error)
        watches = self._in_flight.watches
        if watches or self._in_flight.streams:
            if watches and now - self._last_heard > self.timeout:
                self._in_flight.fail_watches(self.no_reply_error())
            elif now >= self._next_ping:
                self._next_ping = now + self.ping_interval
                last = self._in_flight.pending.get(self._ping_id)
                if last is None or last.sent:  # else the last one still waits for the link
                    self._ping_id = self._send_call(Call(fe.Ping(), None))

    def unreachable_error(self) -> FlameError:
        """The error of every call while nothing has ever answered at the endpoint."""
        return unreachable(self.endpoint, self.connect_timeout or 0.0, self._handshake_failure)

    def no_reply_error(self) -> FlameError:
        return no_reply(self.endpoint, self.timeout)

    def _fail_everything(self, error: FlameError) -> None:
        self._in_flight.fail_all(error)
        with self._lock:
            commands, self._commands = self._commands, collections.deque()
        for command in commands:
            fail_command(command, error)
