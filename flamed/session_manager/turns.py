"""The session manager's turn policy: how much of each socket one loop turn serves, so that a
saturated backend does not starve clients and a client's flood does not starve nodes.

A loop turn reads the backend (executor managers) and the frontend (clients), hands what it
read to the controller, then flushes (dispatch, one group commit, the sends). Rules:
- node messages are read and handled in chunks of `BACKEND_CHUNK`, for at most `BACKEND_SLICE`
  seconds a turn, however many times the backend is read within the turn (the tick reads it
  too, before judging silences); what is left stays in the socket for the next turn (none is
  lost, and silences are then judged as of the last time it was read empty, see
  `NodeLinks.tick`);
- after each chunk the frontend is looked at (one `getsockopt`), and served when it holds
  anything: a client's `Ping` waits for one chunk of node messages, not for a whole slice
  (a Ping is answered when read, see `Controller.answer_at_once`); the time the frontend takes
  there is not counted against the backend's slice;
- client requests are served for at most `FRONTEND_SLICE` seconds a turn, over all the times
  the frontend is looked at within the turn (`TurnBudget`); past that, Pings are still answered
  as they are read (they cost nothing), up to the first other request, which is served and
  closes the frontend until the next turn (the daemon's `_on_frontend`): a Ping does not wait
  behind another client's big read;
- within the flush, Pings that came meanwhile are answered between its steps (after the
  dispatch, after the fsync) unless their client has a reply of the turn still to be sent; the
  first other request read there is kept and served first next turn (`_answer_pings`).
Nothing here reads a socket: the daemon passes its sockets' readers, tests pass lists and a
fake clock.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TypeVar

#: Seconds of client requests one loop turn serves at most. What is left is read next turn
#: (zmq_poll sees it), fairly across clients: one client's burst of big reads cannot hold the
#: others' replies, nor heartbeats, for long.
FRONTEND_SLICE = 0.05
#: Seconds of node messages one loop turn reads and handles at most (the rest next turn), so
#: that a busy backend (results of tens of thousands of tasks a second) cannot hold clients'
#: replies for a turn of hundreds of milliseconds. Counted over the handling, not only the
#: reading: handling a report of many results costs many times its reading (a slice of 20 ms
#: of reading was turns of 180 ms at the 99th percentile with 1,000 nodes under load).
BACKEND_SLICE = 0.02
#: Node messages read and handled together within a backend slice (the time is checked, and
#: the frontend looked at, between chunks). Small: a node's `Reports` holds up to a launch's
#: worth of results (`dispatch_depth`, 64), and a client waits for the chunk being handled.
BACKEND_CHUNK = 8

T = TypeVar("T")
Clock = Callable[[], float]


def sliced(
    items: Iterator[T],
    budget: TurnBudget,
    chunk: int,
    counters: Counter[str],
    cut: str,
    *,
    between: Callable[[], None] | None = None,
) -> Iterator[list[T]]:
    """`items` in lists of up to `chunk` until `budget` (begun for this turn) is over, checked
    when the caller asks for the next list, so that the time counted is the caller's handling
    of the lists too, and before taking anything more (none is lost: what is left stays in the
    socket for the next turn); counts `cut` when it stops early. `between` runs after the
    caller handled each list (the daemon serves its frontend there); its time is not counted."""
    while True:
        taken = list(itertools.islice(items, chunk))
        if taken:
            yield taken
            if between is not None:
                with budget.paused():
                    between()
        if len(taken) < chunk:
            return
        if budget.over():
            counters[cut] += 1
            return


class TurnBudget:
    """`seconds` of work per loop turn, however many times the work is taken up within it."""

    def __init__(self, seconds: float, clock: Clock = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._turn = -1
        self._stop = 0.0
        #: the budget of the current turn is spent
        self.spent = False

    def begin(self, turn: int) -> bool:
        """Take the work up in loop turn `turn` (the first time in a turn starts its budget);
        False when the turn's budget is already spent."""
        if turn != self._turn:
            self._turn, self._stop, self.spent = turn, self._clock() + self.seconds, False
        return not self.spent

    def over(self) -> bool:
        """True, and the turn's budget spent, once its time is up."""
        if not self.spent and self._clock() > self._stop:
            self.spent = True
        return self.spent

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The time spent inside (on other work) is not counted."""
        started = self._clock()
        try:
            yield
        finally:
            self._stop += self._clock() - started
