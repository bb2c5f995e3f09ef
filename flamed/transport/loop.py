"""A single-threaded reactor over ZeroMQ sockets, raw file descriptors and timers.

Why not asyncio: every daemon here is one loop that owns its sockets, and a plain
`zmq.Poller` loop that drains each ready socket with non-blocking receives is several times
cheaper per message than awaiting one receive at a time (ZEROMQ.md 3.8), and makes the turn
structure explicit: receive everything that is ready, let the core decide, then run the
turn-end hooks once (group commit, then send). Heartbeats ride the same loop, so a hung loop
stops heartbeating, which is exactly what the peers must notice.

Rules: callbacks never block; time is `Loop.now()` (monotonic seconds); a callback that raises
is a bug and stops the loop (the daemon then exits non-zero), except where the caller catches.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any

import zmq

Callback = Callable[[], None]


class Timer:
    """Handle of a scheduled callback; `cancel()` is idempotent."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callback) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._poller = zmq.Poller()
        self._readers: dict[Any, Callback] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._counter = itertools.count()
        self._turn_end: list[Callback] = []
        self._running = False
        self.turns = 0

    def now(self) -> float:
        return self._clock()

    # --------------------------------------------------------------------------- readers

    def add_reader(self, source: zmq.Socket[bytes] | int, callback: Callback) -> None:
        """Call `callback` whenever `source` (a zmq socket or an fd) is readable.
        For zmq sockets the callback must drain the socket (edge-triggered FD semantics)."""
        self._readers[source] = callback
        self._poller.register(source, zmq.POLLIN)

    def remove_reader(self, source: zmq.Socket[bytes] | int) -> None:
        if self._readers.pop(source, None) is not None:
            self._poller.unregister(source)

    # ---------------------------------------------------------------------------- timers

    def call_at(self, when: float, callback: Callback) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._counter), timer))
        return timer

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self.call_at(self.now() + delay, callback)

    def call_every(self, interval: float, callback: Callback) -> Timer:
        """Repeat `callback` every `interval` seconds; cancel the returned handle to stop."""
        handle = Timer(0.0, callback)

        def tick() -> None:
            if handle.cancelled:
                return
            callback()
            self.call_later(interval, tick)

        self.call_later(interval, tick)
        return handle

    def add_turn_end(self, callback: Callback) -> None:
        """Run `callback` at the end of every loop turn (after readers and timers)."""
        self._turn_end.append(callback)

    # ------------------------------------------------------------------------------- run

    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        """Run until `stop()`."""
        self._running = True
        while self._running:
            self.run_once()

    def run_once(self, max_wait: float | None = None) -> None:
        timeout = self._poll_timeout(max_wait)
        events = self._poller.poll(timeout)
        for source, _ in events:
            callback = self._readers.get(source)
            if callback is not None:
                callback()
        self._run_due_timers()
        for hook in self._turn_end:
            hook()
        self.turns += 1

    def _poll_timeout(self, max_wait: float | None) -> int | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        waits = [] if max_wait is None else [max_wait]
        if self._timers:
            waits.append(self._timers[0][0] - self.now())
        if not waits:
            return None
        return max(0, int(min(waits) * 1000 + 0.999))

    def _run_due_timers(self) -> None:
        now = self.now()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()
