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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flamed.executor_manager.executors import LocalExecutor
from flamed.executor_manager.machines import Phase
from protocol import backend as be
from protocol.types import ExecutorState

if TYPE_CHECKING:
    from flamed.executor_manager.lifecycle import Executors


def converge(em: Executors, snapshot: list[be.ExecutorAssignment], resent: set[tuple[str, int, int]]) -> None:
    wanted = {a.executor_id: a for a in snapshot}
    for executor in list(em.executors.values()):
        if executor.id not in wanted:
            _discard(em, executor)
    for assignment in snapshot:
        held = em.executors.get(assignment.executor_id)
        if held is None:
            held = LocalExecutor(assignment.executor_id, assignment.resreq)
            em.executors[held.id] = held
        _one(em, held, assignment, resent)


def _discard(em: Executors, executor: LocalExecutor) -> None:
    executor.report_exit = False
    if executor.instance is None:
        em.executors.pop(executor.id, None)
        return
    executor.release_after_unbind = True
    em.stop_instance(executor, "not in the session manager's snapshot", graceful=False)


def _one(em: Executors, executor: LocalExecutor, a: be.ExecutorAssignment, resent: set[tuple[str, int, int]]) -> None:
    state = ExecutorState(a.state)
    same_session = a.session is not None and executor.session_id == a.session.session_id
    unbound = be.ExecutorUnbound(executor_id=executor.id, session_id=a.session.session_id if a.session else None)
    match state:
        case ExecutorState.Void:
            em.reports.append(be.ExecutorCreated(executor_id=executor.id))
        case ExecutorState.Idle:
            if executor.instance is not None:
                executor.report_exit = False
                em.stop_instance(executor, "idle in the session manager's snapshot", graceful=False)
        case ExecutorState.Binding | ExecutorState.Bound if same_session and executor.phase is not Phase.Unbinding:
            if state is ExecutorState.Binding and executor.phase is Phase.Bound:
                em.reports.append(be.ExecutorBound(executor_id=executor.id, session_id=executor.session_id or ""))
            _tasks(executor, a, resent)
            em.pump(executor)
        case ExecutorState.Bound if same_session:
            pass  # we are stopping it; ExecutorUnbound follows when the instance is gone
        case ExecutorState.Binding if a.session is not None and a.application is not None:
            tasks = [t for t in a.tasks if (executor.id, t.task_id, t.attempt) not in resent]
            em.bind(executor, a.session, a.application, tasks)
        case ExecutorState.Binding | ExecutorState.Bound:
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
            em.reports.append(unbound)
        case ExecutorState.Unbinding:
            if executor.instance is not None:
                em.unbind(executor, "unbinding in the session manager's snapshot")
            else:
                unbound.reason = "unbound"
                em.reports.append(unbound)
        case ExecutorState.Releasing:
            em.release(executor)
        case _:
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
