"""What callers hand the I/O thread: one small record per command, queued under the lock.

Callers build a command and append it to the thread's deque; only the thread reads it. A
`Session.run` is the cheapest command (there may be a million of them): its `TaskFuture`,
queued as it is, with the input in `run_input` (no object per task besides the future, which
the caller holds anyway); the thread folds runs into `Create`s when it takes its turn (see
`batching`). `STOP` asks the thread to finish the turn
and close. A command still queued when the thread closes is failed by `fail_command`, so no
future or sink is ever left waiting.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from flamed.client.errors import FlameError
from flamed.client.futures import TaskFuture
from flamed.client.sinks import Sink, WatchSinks, fail_sink, set_exception, sinks_of
from flamed.client.streams import Stream
from protocol import frontend as fe


class Call:
    """Send one request; the future (if any) gets the reply."""

    __slots__ = ("future", "message")

    def __init__(self, message: fe.Message, future: Future[Any] | None) -> None:
        self.message = message
        self.future = future


class Create:
    """Create tasks in a session; with `sinks` (one per input), watch each created task."""

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


class Watch:
    """Watch existing tasks; updates go to the sinks until each says it is done."""

    __slots__ = ("session_id", "sinks")

    def __init__(self, session_id: str, sinks: WatchSinks) -> None:
        self.session_id = session_id
        self.sinks = sinks


class OpenStream:
    """Open `stream` (give it a request id, send its request)."""

    __slots__ = ("stream",)

    def __init__(self, stream: Stream) -> None:
        self.stream = stream


class ResendStream:
    """Send the stream's request again under its id; with `request`, that one replaces it
    (and goes out even if the old one still waits in the backlog)."""

    __slots__ = ("request", "stream")

    def __init__(self, stream: Stream, request: fe.Message | None) -> None:
        self.stream = stream
        self.request = request


class CloseStream:
    """Forget `stream` (its later pushes are dropped); send `farewell` if given."""

    __slots__ = ("farewell", "stream")

    def __init__(self, stream: Stream, farewell: fe.Message | None) -> None:
        self.stream = stream
        self.farewell = farewell


StreamCommand = OpenStream | ResendStream | CloseStream

#: Finish the turn, then close the connection.
STOP = object()


def fail_command(command: object, error: FlameError) -> None:
    """Fail the future and every sink of a command the thread never took (a stream command
    has nothing to fail: streams end only when their owner closes them)."""
    if isinstance(command, TaskFuture):  # a run
        set_exception(command, error)
    elif isinstance(command, (Call, Create)) and command.future is not None:
        set_exception(command.future, error)
    if isinstance(command, Create):
        for sink in command.sinks or ():
            fail_sink(sink, error)
    elif isinstance(command, Watch):
        for sinks in command.sinks.values():
            for sink in sinks_of(sinks):
                fail_sink(sink, error)
