"""Python's cyclic garbage collector kept from pausing the loop for long.

A full collection (generation 2) walks every container object the process holds: with a
million tasks held it paused the loop 70-450 ms (bench/scale_bench.py, 1,000 nodes under
load), many times a minute, and each pause delays every reply and heartbeat of its time. So
after each full collection the survivors are frozen (`gc.freeze`: moved where collections do
not walk), and the next full collections walk only what was made since: short pauses. What
is frozen is still freed by reference counting (task records, replies); only garbage in
reference cycles among frozen objects would wait, so every `thaw_every` seconds everything
is thawed and the next full collection walks it all once: one long pause per interval at
most, and no cycle kept longer than that.

Called by the daemon: `turn_end(now)` at the end of each loop turn (a freeze happens between
turns, never inside a collection's callback).
"""

from __future__ import annotations

import gc
from typing import Any, Protocol

#: Seconds between two thaws (see the module rules).
THAW_EVERY = 600.0


class GcModule(Protocol):
    """What is used of the `gc` module (tests pass a fake)."""

    callbacks: list[Any]

    def freeze(self) -> None: ...

    def unfreeze(self) -> None: ...


class Collector:
    def __init__(self, now: float, thaw_every: float = THAW_EVERY, collector: GcModule = gc) -> None:
        self._gc = collector
        self._thaw_every = thaw_every
        self._next_thaw = now + thaw_every
        self._collected = False
        self.freezes = 0
        collector.callbacks.append(self._on_collection)

    def _on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info.get("generation") == 2:
            self._collected = True

    def turn_end(self, now: float) -> None:
        """After a loop turn: freeze what survived a full collection since the last turn, or
        thaw everything when it is time (see the module rules)."""
        if now >= self._next_thaw:
            self._next_thaw = now + self._thaw_every
            self._collected = False
            self._gc.unfreeze()
        elif self._collected:
            self._collected = False
            self._gc.freeze()
            self.freezes += 1

    def close(self) -> None:
        """Stop watching collections and thaw everything (the daemon stops)."""
        if self._on_collection in self._gc.callbacks:
            self._gc.callbacks.remove(self._on_collection)
        self._gc.unfreeze()
