"""The executors an executor manager holds, as it sees them.

Idle: created, no instance. Binding: instance started, waiting for `InstanceReady` and
`SessionEntered`. Bound: the instance serves the session; tasks flow. Unbinding: the instance
is being stopped (leave, then TERM, then KILL); when it has exited the executor is Idle again
(or gone, if a release was asked for). Phases change only through `LocalExecutor.move`, as the
table `PHASE` (machines.py) allows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from flamed.executor_manager.effects import TimerKey
from flamed.executor_manager.machines import PHASE, Phase, PhaseTrigger
from protocol import backend as be
from protocol.types import ResourceRequirement

__all__ = ["InstanceRef", "LocalExecutor", "Phase"]


@dataclass(frozen=True)
class InstanceRef:
    """The instance an executor has, as the core knows it: the shell holds the process."""

    #: the executor's bind that started it (timers and answers carry it)
    number: int
    pid: int


@dataclass(eq=False)
class LocalExecutor:
    id: str
    resreq: ResourceRequirement
    phase: Phase = Phase.Idle
    session: be.SessionContext | None = None
    application: be.ApplicationContext | None = None
    instance: InstanceRef | None = None
    #: the number of the current (or last) bind: an install or start answer for another is stale
    binding: int = 0
    ready: bool = False
    #: tasks given to us and not yet sent to the instance
    queue: deque[be.TaskAssignment] = field(default_factory=deque)
    #: tasks sent to the instance without a result yet, oldest (the running one) first
    in_flight: deque[be.TaskAssignment] = field(default_factory=deque)
    #: the one timer the executor has running (bind, stop or stuck), set and cancelled by the core
    timer: TimerKey | None = None
    #: ExecutorBindFailed was already reported for the current bind
    bind_failed: bool = False
    #: report ExecutorUnbound (and ExecutorReleased) when the instance has exited
    report_exit: bool = True
    release_after_unbind: bool = False
    stop_reason: str = ""
    #: a bind that waits for the previous instance to be gone
    pending_bind: tuple[be.SessionContext, be.ApplicationContext, list[be.TaskAssignment]] | None = None
    #: the last ExecutorUnbound we produced: replayed if a snapshot still thinks we are bound
    last_unbound: be.ExecutorUnbound | None = None
    #: seconds per task of the current instance as its results arrive (None: not known yet)
    pace: float | None = None
    #: loop time since which the instance has been working for the results not yet received
    paced_at: float = 0.0
    #: (task id, attempt) of the running task while it waits for a task of its own session
    #: (`TaskWaiting`): nothing more goes to the instance, tasks launched are handed back
    waiting: tuple[int, int] | None = None

    def move(self, trigger: PhaseTrigger) -> None:
        """Change phase as the table allows (machines.PHASE); any other move is a bug of ours
        and raises `InvalidTransition`."""
        self.phase = PHASE.next(self.phase, trigger)

    @property
    def session_id(self) -> str | None:
        return self.session.session_id if self.session else None

    def task_keys(self) -> set[tuple[int, int]]:
        return {(t.task_id, t.attempt) for t in (*self.queue, *self.in_flight)}

    def take_back(self, session_id: str, count: int) -> list[be.TaskKey]:
        """Up to `count` tasks of `session_id` not yet given to the instance, the last queued
        first (a recall): none while unbinding, whose report hands the queue back anyway."""
        if self.session_id != session_id or self.phase not in (Phase.Binding, Phase.Bound):
            return []
        taken: list[be.TaskKey] = []
        while self.queue and len(taken) < count:
            task = self.queue.pop()
            taken.append(be.TaskKey(task_id=task.task_id, attempt=task.attempt))
        return taken
