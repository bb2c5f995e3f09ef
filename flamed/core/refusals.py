"""A log of refusals that a flood cannot turn into a flood of log lines.

Messages refused because their sender may not speak for the node they name (identity.py) are
each answered and counted by the node links; `RefusalLog` says which of them to log: at most
one line per `interval` for each counter, and the line after a quiet spell says how many went
unlogged since. It keeps two small dicts keyed by counter name (a fixed set), so a forger
cannot grow it; time is an argument.
"""

from __future__ import annotations

#: Seconds between two log lines about one kind of identity refusal (each one is counted).
REFUSAL_LOG_INTERVAL = 1.0


class RefusalLog:
    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self.interval = interval
        #: when each counter may be logged again, and how many were not logged meanwhile
        self._log_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def due(self, counter: str, now: float) -> int | None:
        """A refusal counted in `counter` at `now`: None if it is not to be logged, else how
        many refusals of that counter went unlogged since the last line (the caller logs)."""
        if now < self._log_at.get(counter, float("-inf")):
            self._unlogged[counter] = self._unlogged.get(counter, 0) + 1
            return None
        self._log_at[counter] = now + self.interval
        return self._unlogged.pop(counter, 0)
