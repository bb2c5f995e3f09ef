"""What an instance may say, and what happens to a session whose instances break the rules.

An instance runs a tenant's code: it may fail its own tasks, never its executor manager or the
other instances (DESIGN 6a). So every message an instance sends is checked against the
instance protocol (protocol/instance.py) before it is acted on, and an instance that breaks it
is killed at once (core.py says how its bind or its running task then fails).

The rules, as a table of what each stage of an instance may send:

| stage    | the executor is ...              | the instance may send                                 |
|----------|----------------------------------|-------------------------------------------------------|
| Starting | Binding, no `InstanceReady` yet  | `InstanceReady`, naming its own executor id and pid   |
| Entering | Binding, `EnterSession` sent     | `SessionEntered`                                      |
| Serving  | Bound                            | `TaskResults`: one or more, each for a task it holds  |
|          |                                  | `TaskWaiting`: once per task, for the one it runs     |
| Leaving  | Unbinding (being stopped)        | anything that decodes; results count only for tasks it holds |

Besides these, an instance misbehaves if it sends a frame that does not decode, or uses a
routing id other than the token it was started with (lifecycle.py). A flood is one of these:
a well-behaved instance sends at most two messages per task it holds, plus two.

A session whose instances were killed for misbehaving `MISBEHAVIOUR_LIMIT` times on this node
is not bound here again (until the executor manager restarts): each bind fails at once with the
reason, and bind failures count toward the session's `session_bind_retry_limit` on the session
manager, which then stops giving the session new executors. Without this, a tenant whose
instance misbehaves at every start would keep the node busy starting and killing it.
"""

from __future__ import annotations

import enum

from flamed.executor_manager.executors import LocalExecutor
from flamed.executor_manager.machines import Phase
from protocol import instance as im
from protocol.errors import FlameBaseError

#: Kills for misbehaviour of one session's instances on this node before its binds are refused.
MISBEHAVIOUR_LIMIT = 3
#: Sessions remembered at most (the oldest is forgotten first).
MAX_STRUCK_SESSIONS = 4096


class Misbehaviour(FlameBaseError):
    """An instance broke the instance protocol; the message says what it did."""


class Stage(enum.Enum):
    Starting = "Starting"
    Entering = "Entering"
    Serving = "Serving"
    Leaving = "Leaving"


LEGAL: dict[Stage, tuple[type[im.Message], ...]] = {
    Stage.Starting: (im.InstanceReady,),
    Stage.Entering: (im.SessionEntered,),
    Stage.Serving: (im.TaskResults, im.TaskWaiting),
    Stage.Leaving: (im.InstanceReady, im.SessionEntered, im.TaskResults, im.SessionLeft, im.TaskWaiting),
}

_DOING = {
    Stage.Starting: "before it said InstanceReady",
    Stage.Entering: "while entering the session",
    Stage.Serving: "while serving the session",
}


def stage_of(executor: LocalExecutor) -> Stage:
    if executor.phase is Phase.Binding:
        return Stage.Entering if executor.ready else Stage.Starting
    return Stage.Serving if executor.phase is Phase.Bound else Stage.Leaving


def check(executor: LocalExecutor, message: im.InstanceMessage) -> Stage:
    """The stage `message` arrives in; raises Misbehaviour if it may not be sent there."""
    stage = stage_of(executor)
    if not isinstance(message, LEGAL[stage]):
        raise Misbehaviour(f"sent {type(message).__name__} {_DOING[stage]}")
    instance = executor.instance
    assert instance is not None
    match message:
        case im.InstanceReady(executor_id=executor_id, pid=pid) if stage is Stage.Starting:
            if executor_id != executor.id or pid != instance.pid:
                raise Misbehaviour(
                    f"said InstanceReady for executor {executor_id!r} as pid {pid}, but it was started "
                    f"for executor {executor.id} as pid {instance.pid} (a wrapper must exec the service)"
                )
        case im.TaskResults(results=results) if stage is Stage.Serving:
            if not results:
                raise Misbehaviour("sent TaskResults without a result")
            if _oldest_first(executor, results):
                return stage  # the usual case, checked without a set of every task held
            held = {(t.task_id, t.attempt) for t in executor.in_flight}
            for outcome in results:
                key = (outcome.task_id, outcome.attempt)
                if key not in held:
                    raise Misbehaviour(
                        f"sent a result for task {outcome.task_id} (attempt {outcome.attempt}) it does not hold"
                    )
                held.discard(key)  # a second result for the same task is one it no longer holds
        case im.TaskWaiting(task_id=task_id, attempt=attempt) if stage is Stage.Serving:
            running = executor.in_flight[0] if executor.in_flight else None
            if running is None or (running.task_id, running.attempt) != (task_id, attempt):
                raise Misbehaviour(f"said task {task_id} (attempt {attempt}) waits, but it is not the task it runs")
            if executor.waiting is not None:
                raise Misbehaviour(f"said task {task_id} waits twice")
    return stage


def _oldest_first(executor: LocalExecutor, results: list[im.TaskOutcome]) -> bool:
    """The results are for the oldest tasks the instance holds, in order (as it runs them):
    each for a task it holds, none twice."""
    in_flight = executor.in_flight
    if len(results) > len(in_flight):
        return False
    for task, outcome in zip(in_flight, results, strict=False):  # results: the oldest only
        if task.task_id != outcome.task_id or task.attempt != outcome.attempt:
            return False
    return True


class Strikes:
    """Kills for misbehaviour per session on this node; bounded."""

    def __init__(self, limit: int = MISBEHAVIOUR_LIMIT, capacity: int = MAX_STRUCK_SESSIONS) -> None:
        self.limit = limit
        self.capacity = capacity
        self._kills: dict[str, tuple[int, str]] = {}

    def record(self, session_id: str, reason: str) -> None:
        count = self._kills.pop(session_id, (0, ""))[0] + 1
        if len(self._kills) >= self.capacity:
            del self._kills[next(iter(self._kills))]
        self._kills[session_id] = (count, reason)

    def refusal(self, session_id: str) -> str | None:
        """Why a bind of `session_id` is refused here, or None if it may be bound."""
        count, reason = self._kills.get(session_id, (0, ""))
        if count < self.limit:
            return None
        return (
            f"session {session_id}: its instances were killed for misbehaving {count} times on this node "
            f"(last: {reason}); it is not bound here again"
        )
