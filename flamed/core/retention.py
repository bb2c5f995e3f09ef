"""Retention: a session manager that runs for months holds what its config says, not its history.

On a timer turn (`tick`, every `retention_interval` seconds of the monotonic clock) the part
looks at the state and commits what must go, as records, so that the log, a replay and a
snapshot all agree (invariant I8):

1. with `idle_session_ttl` (0 = off): an open session with no Pending or Running task that
   created or finished nothing for that long is closed (`SessionClosed`, with a session event
   saying why);
2. a closed session whose closing is `closed_session_ttl` old (wall clock of its
   `SessionClosed` record) is deleted whole: `SessionsExpired{reason="closed_session_ttl"}`;
3. while more than `max_finished_tasks` finished tasks (Succeed, Failed, Cancelled) are held:
   the oldest closed sessions go whole (`SessionsExpired{reason="max_finished_tasks"}`), then
   the oldest finished tasks of open sessions, oldest session first, lowest ids first
   (`TasksExpired`); Pending and Running tasks never expire, and a session's counts keep
   their totals.

Each tick deletes at most `TASKS_PER_TICK` tasks (a whole session counts all its tasks) and
`SESSIONS_PER_TICK` sessions, and looks at most `SCAN_PER_TICK` task slots of open sessions,
so that a turn stays short; when more is due, the next tick is due at once (`next_deadline`),
after the loop served its sockets.
Reads of what expired say so (`ClusterState.expired_sessions`, `SessionEntry.was_expired`).
Counted: `sessions_expired`, `tasks_expired`, `sessions_closed_idle`.
"""

from __future__ import annotations

import logging

from flamed.core import records as r
from flamed.core.state import SessionEntry
from flamed.core.tasks import EXPIRED, TERMINAL_CODES
from flamed.core.turn import Turn
from protocol.types import Event, SessionState, TaskState

log = logging.getLogger("flamed.core.retention")

#: Most tasks one tick deletes (freeing a task takes about a microsecond).
TASKS_PER_TICK = 200_000
#: Most task slots of open sessions one tick looks at for finished tasks.
SCAN_PER_TICK = 1_000_000
#: Most sessions one tick deletes (empty ones cost no tasks, but each is a log entry's worth).
SESSIONS_PER_TICK = 10_000
#: Session event code of a session closed after `idle_session_ttl`.
SESSION_CLOSED_IDLE = 1004


class Retention:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        #: monotonic time of the next check
        self.due = 0.0

    def next_deadline(self) -> float:
        return self.due

    def tick(self, turn: Turn) -> None:
        """Expire what the config says must go, if a check is due."""
        now = turn.now.mono
        if now < self.due:
            return
        more = self.run(turn)
        self.due = now if more else now + self.interval

    def run(self, turn: Turn) -> bool:
        """One check; True when more is due than one tick deletes."""
        config = turn.config
        if config.idle_session_ttl > 0:
            self._close_idle(turn)
        budget = _Budget(TASKS_PER_TICK)
        cutoff = turn.now.wall - int(config.closed_session_ttl * 1000)
        state = turn.state
        old: list[str] = []
        for session_id, closed_at in state.closed.items():
            if closed_at > cutoff or not budget.take(state.sessions[session_id].held):
                break
            old.append(session_id)
            if len(old) >= SESSIONS_PER_TICK:
                budget.spent = True
                break
        self._expire_sessions(turn, old, "closed_session_ttl")
        excess = state.finished_held - config.max_finished_tasks
        if excess > 0:
            oldest: list[str] = []
            for session_id in state.closed:
                session = state.sessions[session_id]
                if excess <= 0 or len(old) + len(oldest) >= SESSIONS_PER_TICK or not budget.take(session.held):
                    budget.spent = budget.spent or excess > 0
                    break
                oldest.append(session_id)
                excess -= session.finished_held()
            self._expire_sessions(turn, oldest, "max_finished_tasks")
        if excess > 0 and not budget.spent:
            excess = self._expire_tasks(turn, excess, budget)
        return budget.spent or (excess > 0 and budget.left < TASKS_PER_TICK)

    # ------------------------------------------------------------------ the steps

    @staticmethod
    def _close_idle(turn: Turn) -> None:
        ttl_ms = int(turn.config.idle_session_ttl * 1000)
        wall = turn.now.wall
        idle = [
            s
            for s in turn.state.sessions.values()
            if s.state is SessionState.Open
            and not s.counts[TaskState.Pending]
            and not s.counts[TaskState.Running]
            and s.last_active + ttl_ms <= wall
        ]
        for session in idle:
            message = f"closed: idle for idle_session_ttl ({turn.config.idle_session_ttl:g} s) with no pending work"
            event = Event(code=SESSION_CLOSED_IDLE, message=message, creation_time=wall)
            turn.commit(r.SessionEventRecorded(time=wall, session_id=session.id, event=event))
            turn.commit(r.SessionClosed(time=wall, session_id=session.id))
            turn.session_changed(session.id)
            turn.count("sessions_closed_idle")
            log.info("session %s: %s", session.id, message)

    @staticmethod
    def _expire_sessions(turn: Turn, session_ids: list[str], reason: str) -> None:
        if not session_ids:
            return
        sessions = turn.state.sessions
        tasks = sum(sessions[s].held for s in session_ids)
        turn.commit(r.SessionsExpired(time=turn.now.wall, session_ids=session_ids, reason=reason))
        turn.count("sessions_expired", len(session_ids))
        turn.count("tasks_expired", tasks)
        more = f" and {len(session_ids) - 1} more" if len(session_ids) > 1 else ""
        log.info("retention (%s): session %s%s deleted with %d tasks", reason, session_ids[0], more, tasks)

    @staticmethod
    def _expire_tasks(turn: Turn, excess: int, budget: _Budget) -> int:
        """The oldest finished tasks of open sessions; returns the excess left."""
        scan = SCAN_PER_TICK
        for session in list(turn.state.sessions.values()):
            if excess <= 0 or budget.spent or scan <= 0:
                break
            if session.state is not SessionState.Open or not session.finished_held():
                continue
            ranges, count, scanned = finished_ranges(session, min(excess, budget.left), scan)
            scan -= scanned
            if not count:
                continue
            budget.take(count)
            excess -= count
            turn.commit(
                r.TasksExpired(time=turn.now.wall, session_id=session.id, ranges=ranges, reason="max_finished_tasks")
            )
            turn.count("tasks_expired", count)
            log.info("retention (max_finished_tasks): session %s: %d finished tasks deleted", session.id, count)
        return excess


class _Budget:
    """Tasks one tick may still delete."""

    def __init__(self, tasks: int) -> None:
        self.left = tasks
        self.spent = False

    def take(self, tasks: int) -> bool:
        """Take `tasks` (a whole session: even past what is left, if nothing was taken yet, so
        that a session bigger than a tick still goes); False when there is no room."""
        if tasks > self.left and self.left < TASKS_PER_TICK:
            self.spent = True
            return False
        self.left -= tasks
        if self.left <= 0:
            self.spent = True
        return True


def finished_ranges(session: SessionEntry, quota: int, scan: int) -> tuple[list[tuple[int, int]], int, int]:
    """The oldest finished tasks of `session`, at most `quota` of them, looking at most `scan`
    slots: (inclusive id ranges, tasks in them, slots looked at). Slots already expired join
    a range (expiring them again is a no-op); an unfinished task ends it."""
    ranges: list[tuple[int, int]] = []
    count = 0
    start = end = 0
    codes = session.tasks.codes()
    first = session.base - session.tasks.dropped  # the slot of task base + 1
    id_of_slot = session.tasks.dropped + 1
    index = first - 1
    for index in range(first, len(codes)):
        if index - first >= scan or count >= quota:
            break
        code = codes[index]
        task_id = index + id_of_slot
        if code == EXPIRED:
            if start:
                end = task_id
            continue
        if code in TERMINAL_CODES:
            if not start:
                start = task_id
            end = task_id
            count += 1
        elif start:
            ranges.append((start, end))
            start = 0
    if start:
        ranges.append((start, end))
    return ranges, count, index + 1 - first
