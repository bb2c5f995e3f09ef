"""Counting frames a daemon could not accept, with log lines a flood cannot multiply.

A peer can send bad frames as fast as the network allows; one log line each would fill the
disk and bury everything else. `DroppedFrames` counts every one and logs at most one line per
place (`where`: a socket's name, ours, never the peer's) every `every` seconds, with the count
so far and the latest reason.
"""

from __future__ import annotations

import logging

from flamed.transport.loop import Loop


class DroppedFrames:
    def __init__(self, loop: Loop, log: logging.Logger, every: float = 5.0) -> None:
        self.loop = loop
        self.log_to = log
        self.every = every
        #: every frame counted, by place
        self.counts: dict[str, int] = {}
        self._logged: dict[str, float] = {}

    def log(self, where: str, reason: str, peer: bytes = b"") -> None:
        """Count one frame dropped at `where` (because of `reason`, from routing id `peer`)."""
        count = self.counts[where] = self.counts.get(where, 0) + 1
        now = self.loop.now()
        if now - self._logged.get(where, -1e9) >= self.every:
            self._logged[where] = now
            sender = f" from {peer[:32]!r}" if peer else ""
            self.log_to.warning("%s: dropped a bad frame%s (%d so far): %s", where, sender, count, reason)
