"""Converge the executors an executor manager holds to a registration snapshot (DESIGN 5).

The snapshot is what the session manager wants the node to hold, with each executor's state
as the session manager sees it. For each executor we act so that both sides end up agreeing,
and report what the session manager missed while the link was down:

| SM state  | we hold it ...                 | we do                                           |
|-----------|--------------------------------|-------------------------------------------------|
| (absent)  | anything                       | stop its instance silently, forget it           |
| Void      | or not                         | hold it Idle, report ExecutorCreated            |
| Idle      | with an instance               | stop the instance silently                      |
| Binding   | bound to that session          | report ExecutorBound, queue missing tasks       |
| Binding   | otherwise                      | bind it (after stopping another instance)       |
| Bound     | bound/binding to that session  | keep; queue tasks we lack, drop queued extras   |
| Bound     | stopping it                    | nothing: ExecutorUnbound follows                |
| Bound     | otherwise                      | report ExecutorUnbound (our last reason)        |
| Unbinding | with an instance               | unbind it (reported when the instance exited)   |
| Unbinding | Idle or not at all             | report ExecutorUnbound                          |
| Releasing | any                            | release it (unbinding first), ExecutorReleased  |

The table `CONVERGE` below is this one as code: (the session manager's state, how we hold the
executor: `Held`) -> the `Step` taken; tests/em/test_converge_table.py checks it is complete.
"""

from __future__ import annotations

import enum

from flamed.executor_manager.core import ExecutorsCore
from flamed.executor_manager.effects import Effect
from flamed.executor_manager.executors import LocalExecutor
from flamed.executor_manager.link import BackendLink
from flamed.executor_manager.machines import Phase
from protocol import backend as be
from protocol.types import ExecutorState


def converge(
    em: ExecutorsCore, snapshot: list[be.ExecutorAssignment], resent: set[tuple[str, int, int]], now: float
) -> list[Effect]:
    """Converge to `snapshot` (`resent`: the completions resent with it, whose tasks are not
    queued again); returns the effects. Tasks start only once the link is confirmed, which the
    manager tells the core (`link_confirmed`) after this."""
    em.now = max(em.now, now)
    wanted = {a.executor_id: a for a in snapshot}
    for executor in list(em.executors.values()):
        if executor.id not in wanted:
            em.discard(executor, "not in the session manager's snapshot")
    for assignment in snapshot:
        held = em.executors.get(assignment.executor_id)
        if held is None:
            held = LocalExecutor(assignment.executor_id, assignment.resreq)
            em.executors[held.id] = held
        _one(em, held, assignment, resent)
    return em.take_effects()


def rejoin(
    link: BackendLink, pending: list[be.ExecutorReport], snapshot: list[be.ExecutorAssignment]
) -> tuple[list[be.ExecutorReport], set[tuple[str, int, int]]]:
    """A registration was answered with `snapshot`: the reports still to send (`pending`, not
    sent yet, then the kept completions to resend) and the keys of the resent completions.

    Completions queued but not sent yet are still unacknowledged: the snapshot decides about
    them too, and a task whose result waits here is not launched again. A recall not reported
    yet is void: the snapshot still lists those tasks here, so they are queued again; sent
    after it, the report would have them run twice. The kept completions whose task the
    snapshot no longer lists are given up (`link.not_resent`)."""
    wanted: set[tuple[str, int, int]] = set()
    for assignment in snapshot:
        wanted.update((assignment.executor_id, t.task_id, t.attempt) for t in assignment.tasks)
    unsent = [r for r in pending if isinstance(r, be.TaskCompleted)]
    if unsent:
        link.keep(0, unsent)
    kept = [r for r in pending if not isinstance(r, be.TaskCompleted | be.TasksReturned)]
    resend = link.take_for_resend(wanted)
    return [*kept, *resend], {(c.executor_id, c.task_id, c.attempt) for c in resend}


class Held(enum.Enum):
    """How we hold an executor, against the session the snapshot names for it."""

    #: an instance binding or bound to that session
    serving = "serving"
    #: an instance of that session being stopped
    stopping = "stopping"
    #: an instance of another session (or of none)
    other = "other"
    #: no instance
    none = "none"


class Step(enum.Enum):
    """What converging one executor does (see the table `CONVERGE`)."""

    report_created = "report ExecutorCreated"
    stop_quietly = "stop the instance silently"
    keep = "keep; report ExecutorBound if the SM waits for it; queue the tasks we lack"
    bind = "bind it (after stopping another instance)"
    nothing = "nothing: ExecutorUnbound follows when the instance is gone"
    not_held = "report ExecutorUnbound (our last reason); stop another instance silently"
    unbind = "unbind it (reported when the instance exited)"
    unbound = "report ExecutorUnbound"
    release = "release it (unbinding first), ExecutorReleased"


S, H = ExecutorState, Held
#: (the session manager's state, how we hold it) -> what we do. The module docstring says it in prose.
CONVERGE: dict[tuple[ExecutorState, Held], Step] = {
    **{(S.Void, h): Step.report_created for h in Held},
    **{(S.Idle, h): Step.stop_quietly for h in (H.serving, H.stopping, H.other)},
    (S.Idle, H.none): Step.nothing,
    (S.Binding, H.serving): Step.keep,
    (S.Binding, H.stopping): Step.bind,
    (S.Binding, H.other): Step.bind,
    (S.Binding, H.none): Step.bind,
    (S.Bound, H.serving): Step.keep,
    (S.Bound, H.stopping): Step.nothing,
    (S.Bound, H.other): Step.not_held,
    (S.Bound, H.none): Step.not_held,
    **{(S.Unbinding, h): Step.unbind for h in (H.serving, H.stopping, H.other)},
    (S.Unbinding, H.none): Step.unbound,
    **{(S.Releasing, h): Step.release for h in Held},
}


def held(executor: LocalExecutor, session_id: str | None) -> Held:
    if executor.instance is None:
        return Held.none
    if session_id is None or executor.session_id != session_id:
        return Held.other
    return Held.stopping if executor.phase is Phase.Unbinding else Held.serving


def _one(
    em: ExecutorsCore, executor: LocalExecutor, a: be.ExecutorAssignment, resent: set[tuple[str, int, int]]
) -> None:
    state = ExecutorState(a.state)
    step = CONVERGE.get((state, held(executor, a.session.session_id if a.session else None)), Step.nothing)
    if step is Step.bind and (a.session is None or a.application is None):
        step = Step.not_held  # a snapshot that says Binding without what to bind: we do not hold it
    unbound = be.ExecutorUnbound(executor_id=executor.id, session_id=a.session.session_id if a.session else None)
    match step:
        case Step.report_created:
            em.report(be.ExecutorCreated(executor_id=executor.id))
        case Step.stop_quietly:
            executor.report_exit = False
            em.stop_instance(executor, "idle in the session manager's snapshot", graceful=False)
        case Step.keep:
            if state is ExecutorState.Binding and executor.phase is Phase.Bound:
                em.report(be.ExecutorBound(executor_id=executor.id, session_id=executor.session_id or ""))
            _tasks(executor, a, resent)
            em.pump(executor)
        case Step.bind:
            assert a.session is not None and a.application is not None
            tasks = [t for t in a.tasks if (executor.id, t.task_id, t.attempt) not in resent]
            em.bind(executor, a.session, a.application, tasks)
        case Step.not_held:
            # We do not hold that binding (the instance died meanwhile, or we serve another
            # session): the session manager hears it unbound; another instance stops quietly.
            last = executor.last_unbound
            if last is not None and last.session_id == unbound.session_id and executor.phase is Phase.Idle:
                unbound = last
            else:
                unbound.reason = "the executor manager does not hold this binding"
            if executor.instance is not None:
                executor.report_exit = False
                em.stop_instance(executor, "bound to another session than the snapshot says", graceful=False)
            em.report(unbound)
        case Step.unbind:
            em.unbind(executor, "unbinding in the session manager's snapshot")
        case Step.unbound:
            unbound.reason = "unbound"
            em.report(unbound)
        case Step.release:
            em.release(executor)
        case Step.nothing:
            pass


def _tasks(executor: LocalExecutor, a: be.ExecutorAssignment, resent: set[tuple[str, int, int]]) -> None:
    """Queue the snapshot's tasks we lack; drop queued tasks the snapshot no longer gives us."""
    listed = {(t.task_id, t.attempt) for t in a.tasks}
    have = executor.task_keys()
    kept = [t for t in executor.queue if (t.task_id, t.attempt) in listed]
    executor.queue.clear()
    executor.queue.extend(kept)
    for task in a.tasks:
        key = (task.task_id, task.attempt)
        if key not in have and (executor.id, *key) not in resent:
            executor.queue.append(task)
