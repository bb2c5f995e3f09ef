"""The client's I/O thread: the one owner of the DEALER socket to a session manager.

Callers never touch the socket. They hand commands to the thread through a locked deque and
wake it through a pipe (written only when the deque goes from empty to non-empty); the thread
sends, receives and completes `concurrent.futures.Future`s. Requests are pipelined and matched
by `request_id`.

Throughput rules:
- every `CreateTasks` for one session taken in the same turn goes out as ONE request; the
  returned ids are split back to the callers in order;
- a batch with tasks that want their results asks for them in the same request
  (`CreateTasks{watch}`: no second round trip before results can flow); its `TaskUpdates`
  pushes are dispatched to per-task sinks (the futures of `Session.run`), so there is no thread
  per task.

Liveness: the session manager drops the watches of a client it has not heard from for its
`client_ttl` (30 s), so while watches are open the thread sends a `Ping` every
`ping_interval`. If nothing at all is heard for `timeout` seconds with watches open, their
sinks fail. When the socket reconnects (a restarted session manager has no watches), every
watch already sent is sent again under its request id; the first push of a watch is the
current state, so this is idempotent. Requests other than watches are not re-sent: one
without a reply in `timeout` seconds fails with "no reply from session manager".
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
import zmq
from zmq.utils.monitor import recv_monitor_message

from flamed.client.errors import FlameError, FlameErrorCode, from_server
from flamed.client.sinks import Sink, fail_sink, set_exception, set_result, update_sink
from flamed.transport.security import configured_client_curve
from flamed.transport.sockets import connect_dealer
from protocol import frontend as fe
from protocol.codec import DEFAULT_MAX_MESSAGE_SIZE, HEADER, FrameError, server_reply_codec
from protocol.types import Task

log = logging.getLogger("flamed.client")

#: Largest CreateTasks batch, by count and by input bytes (the server's frame limit is 64 MiB).
MAX_BATCH_TASKS = 50_000
MAX_BATCH_BYTES = 16 * 1024 * 1024


# ---------------------------------------------------------------- commands (caller -> thread)


class _Call:
    __slots__ = ("future", "message")

    def __init__(self, message: fe.Message, future: Future[Any] | None) -> None:
        self.message = message
        self.future = future


class _Create:
    __slots__ = ("future", "inputs", "session_id", "sinks")

    def __init__(
        self,
        session_id: str,
        inputs: list[bytes | None],
        future: Future[list[int]] | None,
        sinks: list[Sink] | None,
    ) -> None:
        self.session_id = session_id
        self.inputs = inputs
        self.future = future
        self.sinks = sinks


class _Run:
    """One `Session.run`: the cheapest command, since there may be 100,000 of them."""

    __slots__ = ("future", "input", "session_id")

    def __init__(self, session_id: str, data: bytes | None, future: Future[Any]) -> None:
        self.session_id = session_id
        self.input = data
        self.future = future


class _Watch:
    __slots__ = ("session_id", "sinks")

    def __init__(self, session_id: str, sinks: dict[int, list[Sink]]) -> None:
        self.session_id = session_id
        self.sinks = sinks


_STOP = object()

# ---------------------------------------------------------------- in-flight records (thread only)


class _PendingCall:
    __slots__ = ("deadline", "future")

    def __init__(self, future: Future[Any] | None, deadline: float) -> None:
        self.future = future
        self.deadline = deadline


class _PendingCreate:
    __slots__ = ("deadline", "parts", "session_id")

    def __init__(self, session_id: str, parts: list[_Create], deadline: float) -> None:
        self.session_id = session_id
        self.parts = parts
        self.deadline = deadline


class _ActiveWatch:
    __slots__ = ("include_data", "sent", "session_id", "sinks")

    def __init__(self, session_id: str, sinks: dict[int, list[Sink]]) -> None:
        self.session_id = session_id
        self.sinks = sinks
        self.sent = False
        self.include_data = True


class IoThread:
    """Owns the socket; every public method is safe to call from any thread."""

    def __init__(
        self, endpoint: str, timeout: float, ping_interval: float | None = None, config_path: str | None = None
    ) -> None:
        self.endpoint = endpoint
        self.config_path = config_path
        self.timeout = timeout
        self.ping_interval = ping_interval if ping_interval is not None else min(10.0, timeout / 3)
        self._lock = threading.Lock()
        self._commands: collections.deque[object] = collections.deque()
        self._woken = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closed = False
        self._next_id = 0
        self.max_message_size = DEFAULT_MAX_MESSAGE_SIZE  # from the config once the thread starts
        # thread-owned state
        self._pending: dict[int, _PendingCall | _PendingCreate] = {}
        self._watches: dict[int, _ActiveWatch] = {}
        self._backlog: collections.deque[tuple[int, list[bytes]]] = collections.deque()
        self._codec = server_reply_codec()
        self._encoder = msgspec.msgpack.Encoder()
        self._last_heard = time.monotonic()
        self._next_ping = 0.0
        self._disconnected = False
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
        self._submit(_Call(message, future))
        return future

    def create_tasks(
        self, session_id: str, inputs: list[bytes | None], sinks: list[Sink] | None = None
    ) -> Future[list[int]]:
        """Create tasks (coalesced with others of the session); with `sinks` (one per input),
        watch each created task and feed its updates to its sink."""
        future: Future[list[int]] = Future()
        self._submit(_Create(session_id, inputs, future, sinks))
        return future

    def run(self, session_id: str, data: bytes | None) -> Future[Any]:
        """Create a task; the future completes as `complete_run` says."""
        future: Future[Any] = Future()
        self._submit(_Run(session_id, data, future))
        return future

    def watch(self, session_id: str, sinks: dict[int, list[Sink]]) -> None:
        """Watch existing tasks; updates go to the sinks until each says it is done."""
        self._submit(_Watch(session_id, sinks))

    def close(self, wait: float = 2.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._commands.append(_STOP)
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
            from flamed.config import load_config

            self.max_message_size = load_config(self.config_path).limits.max_message_size
            self._sock = connect_dealer(self.endpoint, routing_id, curve=configured_client_curve(self.config_path))
            self._monitor = self._sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
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
            self._sock.disable_monitor()
            self._monitor.close(0)
            self._sock.close(0)
            with self._lock:
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        sock = self._sock
        want_out = False
        poller.register(sock, zmq.POLLIN)
        while True:
            events = dict(poller.poll(self._poll_timeout_ms()))
            if self._wake_r in events and not self._take_commands():
                return
            if sock in events:
                self._receive()
            if self._monitor in events:
                self._on_monitor()
            self._flush_backlog()
            if bool(self._backlog) != want_out:
                want_out = bool(self._backlog)
                poller.modify(sock, zmq.POLLIN | (zmq.POLLOUT if want_out else 0))
            self._check_time(time.monotonic())

    def _poll_timeout_ms(self) -> int:
        return 50 if self._backlog else 200

    def _take_commands(self) -> bool:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        with self._lock:
            commands, self._commands = self._commands, collections.deque()
            self._woken = False
        creates: dict[str, list[_Create]] = {}
        stop = False
        for command in commands:
            if type(command) is _Run:
                parts = creates.setdefault(command.session_id, [])
                if not parts or parts[-1].future is not None:
                    parts.append(_Create(command.session_id, [], None, []))
                run = parts[-1]
                run.inputs.append(command.input)
                run.sinks.append(command.future)  # type: ignore[union-attr]
            elif command is _STOP:
                stop = True
            elif isinstance(command, _Create):
                creates.setdefault(command.session_id, []).append(command)
            elif isinstance(command, _Call):
                self._send_call(command)
            elif isinstance(command, _Watch):
                self._start_watch(command.session_id, command.sinks)
        for session_id, parts in creates.items():
            self._send_creates(session_id, parts)
        return not stop

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
            self._fail_pending(request_id, error)
            return
        self._backlog.append((request_id, [HEADER, payload]))

    def _send_call(self, call: _Call) -> None:
        request_id = self._request_id()
        self._pending[request_id] = _PendingCall(call.future, time.monotonic() + self.timeout)
        self._enqueue(request_id, call.message)

    def _send_creates(self, session_id: str, parts: list[_Create]) -> None:
        batch: list[_Create] = []
        count = size = 0
        for part in parts:
            part_size = sum(len(i) for i in part.inputs if i)
            if batch and (count + len(part.inputs) > MAX_BATCH_TASKS or size + part_size > MAX_BATCH_BYTES):
                self._send_create_batch(session_id, batch)
                batch, count, size = [], 0, 0
            batch.append(part)
            count += len(part.inputs)
            size += part_size
        if batch:
            self._send_create_batch(session_id, batch)

    def _send_create_batch(self, session_id: str, parts: list[_Create]) -> None:
        request_id = self._request_id()
        inputs = parts[0].inputs if len(parts) == 1 else [i for p in parts for i in p.inputs]
        self._pending[request_id] = _PendingCreate(session_id, parts, time.monotonic() + self.timeout)
        watch = any(part.sinks is not None for part in parts)  # results come under this request id
        self._enqueue(request_id, fe.CreateTasks(session_id=session_id, inputs=inputs, watch=watch))

    def _start_watch(self, session_id: str, sinks: dict[int, list[Sink]], request_id: int | None = None) -> None:
        """Follow `sinks`: with `request_id`, under that `CreateTasks{watch}` (the server pushes
        already, no request goes out); without, with a new `WatchTasks`."""
        if not sinks:
            return
        if not self._watches:
            self._last_heard = max(self._last_heard, time.monotonic())
        watch = _ActiveWatch(session_id, sinks)
        if request_id is not None:
            watch.sent = True
            self._watches[request_id] = watch
            return
        request_id = self._request_id()
        self._watches[request_id] = watch
        self._enqueue(request_id, fe.WatchTasks(session_id=session_id, task_ids=sorted(sinks)))

    def _flush_backlog(self) -> None:
        backlog = self._backlog
        sock = self._sock
        while backlog:
            request_id, frames = backlog[0]
            try:
                sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            backlog.popleft()
            watch = self._watches.get(request_id)
            if watch is not None:
                watch.sent = True

    # ------------------------------------------------------------ replies

    def _receive(self) -> None:
        sock = self._sock
        for _ in range(10_000):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._last_heard = time.monotonic()
            try:
                reply = self._codec.decode(frames)
            except FrameError as exc:
                log.warning("bad frame from session manager at %s: %s", self.endpoint, exc.message)
                continue
            self._dispatch(reply)

    def _dispatch(self, reply: fe.ServerReply) -> None:
        request_id = reply.request_id
        if isinstance(reply, fe.TaskUpdates):
            self._on_updates(request_id, reply.tasks)
            return
        watch = self._watches.pop(request_id, None)
        if watch is not None:  # an Error (unknown session or task) ends a watch
            error = self._error_of(reply)
            for sinks in watch.sinks.values():
                for sink in sinks:
                    fail_sink(sink, error)
            return
        pending = self._pending.pop(request_id, None)
        if pending is None:
            if isinstance(reply, fe.Error):
                log.warning("session manager at %s: %s: %s", self.endpoint, reply.code, reply.message)
            return
        if isinstance(pending, _PendingCall):
            if pending.future is not None:
                if isinstance(reply, fe.Error):
                    set_exception(pending.future, from_server(reply.code, reply.message))
                else:
                    set_result(pending.future, reply)
            return
        if isinstance(reply, fe.TasksCreated):
            self._on_created(request_id, pending, reply.task_ids)
        else:
            error = self._error_of(reply)
            for part in pending.parts:
                if part.future is not None:
                    set_exception(part.future, error)
                for sink in part.sinks or ():
                    fail_sink(sink, error)

    def _error_of(self, reply: fe.ServerReply) -> FlameError:
        if isinstance(reply, fe.Error):
            return from_server(reply.code, reply.message)
        return FlameError(FlameErrorCode.INTERNAL, f"unexpected {type(reply).__name__} from {self.endpoint}")

    def _on_created(self, request_id: int, pending: _PendingCreate, task_ids: list[int]) -> None:
        start = 0
        sinks: dict[int, list[Sink]] = {}
        for part in pending.parts:
            ids = task_ids[start : start + len(part.inputs)]
            start += len(part.inputs)
            if part.sinks is not None:
                for task_id, sink in zip(ids, part.sinks, strict=True):
                    sinks[task_id] = [sink]
                    if type(sink) is Future:
                        sink.task_id = task_id  # type: ignore[attr-defined]  # documented on Session.run
            if part.future is not None:
                set_result(part.future, ids)
        self._start_watch(pending.session_id, sinks, request_id)

    def _on_updates(self, request_id: int, tasks: list[Task]) -> None:
        watch = self._watches.get(request_id)
        if watch is None:
            return
        all_sinks = watch.sinks
        for task in tasks:
            sinks = all_sinks.get(task.id)
            if sinks is None:
                continue
            kept = [sink for sink in sinks if not update_sink(sink, task)]
            if task.state.is_terminal or not kept:
                del all_sinks[task.id]
            elif len(kept) != len(sinks):
                all_sinks[task.id] = kept
        if not all_sinks:
            del self._watches[request_id]

    def _on_monitor(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self._disconnected = True
                continue
            if event["event"] != zmq.EVENT_CONNECTED or not self._disconnected:
                continue  # the first connection may be made before the monitor is attached
            self._disconnected = False
            log.info("reconnected to session manager at %s; renewing %d watches", self.endpoint, len(self._watches))
            for request_id, watch in self._watches.items():
                if watch.sent:
                    watch.sent = False
                    message = fe.WatchTasks(session_id=watch.session_id, task_ids=sorted(watch.sinks))
                    self._enqueue(request_id, message)

    # ------------------------------------------------------------ timers

    def _check_time(self, now: float) -> None:
        if self._pending:
            expired = []
            for request_id, pending in self._pending.items():
                if pending.deadline > now:
                    break  # one timeout for all: deadlines grow with request ids
                expired.append(request_id)
            if expired:
                error = self.no_reply_error()
                for request_id in expired:
                    self._fail_pending(request_id, error)
        if self._watches:
            if now - self._last_heard > self.timeout:
                self._fail_watches(self.no_reply_error())
            elif now >= self._next_ping:
                self._next_ping = now + self.ping_interval
                self._send_call(_Call(fe.Ping(), None))

    def no_reply_error(self) -> FlameError:
        return FlameError(
            FlameErrorCode.INTERNAL, f"no reply from session manager at {self.endpoint} in {self.timeout:g}s"
        )

    def _fail_pending(self, request_id: int, error: FlameError) -> None:
        pending = self._pending.pop(request_id, None)
        if isinstance(pending, _PendingCall):
            if pending.future is not None:
                set_exception(pending.future, error)
        elif pending is not None:
            for part in pending.parts:
                if part.future is not None:
                    set_exception(part.future, error)
                for sink in part.sinks or ():
                    fail_sink(sink, error)

    def _fail_watches(self, error: FlameError) -> None:
        watches, self._watches = self._watches, {}
        for watch in watches.values():
            for sinks in watch.sinks.values():
                for sink in sinks:
                    fail_sink(sink, error)

    def _fail_everything(self, error: FlameError) -> None:
        self._fail_watches(error)
        pending, self._pending = self._pending, {}
        for record in pending.values():
            if isinstance(record, _PendingCall):
                if record.future is not None:
                    set_exception(record.future, error)
            else:
                for part in record.parts:
                    if part.future is not None:
                        set_exception(part.future, error)
                    for sink in part.sinks or ():
                        fail_sink(sink, error)
        with self._lock:
            commands, self._commands = self._commands, collections.deque()
        for command in commands:
            if isinstance(command, (_Call, _Create, _Run)) and command.future is not None:
                set_exception(command.future, error)
            if isinstance(command, _Create):
                for sink in command.sinks or ():
                    fail_sink(sink, error)
            elif isinstance(command, _Watch):
                for sinks in command.sinks.values():
                    for sink in sinks:
                        fail_sink(sink, error)
