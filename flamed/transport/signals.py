"""Signals handled in the loop's own turn, not inside a signal handler.

Python writes the number of every signal it catches, one byte each, to the wakeup fd; the
handlers installed here do nothing else. The loop reads the bytes and calls `handle(signum)`
for each, in order, so a daemon's reaction to SIGTERM or SIGHUP is ordinary loop code.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable, Iterable

from flamed.transport.loop import Loop


def _record_only(signum: int, frame: object) -> None:
    """The wakeup fd has the signal number already; nothing to do here."""


class SignalInbox:
    def __init__(self, loop: Loop, handle: Callable[[int], None]) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._handle = handle
        loop.add_reader(self._reader.fileno(), self._drain)

    def install(self, signums: Iterable[int]) -> None:
        """Route these signals to the loop (main thread only, as `signal` requires)."""
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in signums:
            signal.signal(signum, _record_only)

    def _drain(self) -> None:
        received = b""
        try:
            while chunk := self._reader.recv(4096):
                received += chunk
        except BlockingIOError:
            pass
        for signum in received:
            self._handle(signum)

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        self._reader.close()
        self._writer.close()
