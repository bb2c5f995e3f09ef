"""Log lines for refused handshakes, at most one per domain per window, with counts.

An unauthenticated peer can start CURVE handshakes as fast as the network allows; logging each
refusal (1,861 WARNING lines in 5 s, measured) fills the journal and buries everything else.
`RefusalLog` logs the first refusal of a window in full, counts the rest, and when the window
has passed logs one summary: `refused 1,860 more clients connections in the last 5.0 s, last
from tcp://...`. The caller keeps its own exact counter; this only decides what reaches the log.

Rules: windows are per domain (`clients`, `nodes`), so a flood on one socket never hides a
refusal on the other; memory is one small record per domain the caller names (the ZAP domains
are ours, not the peer's). A summary is written by the next refusal after the window or by
`flush()`, which the owner calls every window (so the count of a flood that stopped is not
left unsaid). Time comes from `clock` (monotonic seconds), injectable for tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds of one window: at most one full line and one summary per domain per window.
REFUSAL_WINDOW = 5.0


@dataclass
class _Window:
    start: float
    more: int = 0
    last: str = ""


class RefusalLog:
    def __init__(
        self, log: logging.Logger, window: float = REFUSAL_WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.log = log
        self.window = window
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def refused(self, domain: str, detail: str) -> None:
        """One refused connection in `domain`; `detail` says from where and why."""
        now = self.clock()
        current = self._windows.get(domain)
        if current is not None and now - current.start < self.window:
            current.more += 1
            current.last = detail
            return
        if current is not None:
            self._summary(domain, current, now)
        self.log.warning("refused %s connection from %s", domain, detail)
        self._windows[domain] = _Window(start=now)

    def flush(self, *, everything: bool = False) -> None:
        """Write the summary of every window that has passed (call it every `window`); with
        `everything`, of the open ones too (at close)."""
        now = self.clock()
        for domain, current in list(self._windows.items()):
            if everything or now - current.start >= self.window:
                self._summary(domain, current, now)
                del self._windows[domain]

    def _summary(self, domain: str, current: _Window, now: float) -> None:
        if current.more:
            self.log.warning(
                "refused %s more %s connections in the last %.1f s, last from %s",
                f"{current.more:,}",
                domain,
                now - current.start,
                current.last,
            )
