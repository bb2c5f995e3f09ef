"""The session manager's own stalls: when the silence of nodes may be judged (DESIGN 5).

Ticks come at least every heartbeat interval while there are links (heartbeats fall due), so a
gap between two ticks of twice that, and at least a second, is one no busy turn explains: this
process did not run (paused, or one turn was very long), and what the nodes sent meanwhile
waits unread, perhaps not even taken from the kernel yet. Nobody is judged then: it listens
for as long as any node may be silent (`heartbeat_interval * heartbeat_liveness`) before
judging silence or drains. Once: the tick that ends the listening judges even if it is late
too, so an overloaded session manager still finds dead nodes. Time is an argument.
"""

from __future__ import annotations


class Stalls:
    def __init__(self, heartbeat_interval: float, silence_limit: float) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.silence_limit = silence_limit
        self._last_tick: float | None = None
        #: after a stall: no judging until then
        self._listen_until: float | None = None

    @property
    def limit(self) -> float:
        """The longest gap between two ticks that is not a stall."""
        return max(1.0, 2 * self.heartbeat_interval)

    def tick(self, now: float) -> float | None:
        """A tick at `now`. None: judge the nodes now. Otherwise do not: a positive number is
        the length of a stall, seen now, that starts the listening (count it, log it); 0.0
        means it is still listening."""
        stalled = 0.0 if self._last_tick is None else now - self._last_tick
        self._last_tick = now
        if self._listen_until is not None:
            if now < self._listen_until:
                return 0.0
            self._listen_until = None  # listened: judge now, even if this tick was late too
            return None
        if stalled > self.limit:
            self._listen_until = now + self.silence_limit
            return stalled
        return None

    def next_deadline(self, *, watching: bool) -> float:
        """When the next tick is due for stalls to be told (`watching`: there are links)."""
        deadlines = [float("inf")]
        if watching and self._last_tick is not None:
            deadlines.append(self._last_tick + self.heartbeat_interval)  # the tick rhythm a stall is told by
        if self._listen_until is not None:
            deadlines.append(self._listen_until)
        return min(deadlines)
