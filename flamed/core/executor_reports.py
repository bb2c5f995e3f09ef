"""What a node reports about its executors: task completions, creations, binds, unbinds, releases.

`apply_reports` turns one `Reports` frame of a current link into records; `lose_executor` forgets
an executor that went away with its node; `requeue` puts Running tasks back to Pending (or fails
them past the retry limit). They only decide, on the turn they are given: they commit records and
tell the dispatcher (the turn's notes), and send nothing themselves.

Rules:
- a completion is recorded only if the task is Running in that attempt on that executor, once
  per frame; anything else is a stale completion, counted and dropped;
- an executor report is applied only if the executor is on the reporting node and the report is
  a legal move from its current state; anything else is a stale report, counted and dropped;
- completions are committed in one `TasksFinished` per session, flushed before any executor
  report so the records keep the order of the frame;
- an executor that loses its instance or its node has its tasks retried; a retry is counted
  (`retry_count + 1`) only for a loss, not for tasks handed back unstarted, and a task whose
  retries would pass `task_retry_limit` fails instead (only tasks still Running move: R9).
"""

from __future__ import annotations

import logging
from typing import assert_never

from flamed.core import records as r
from flamed.core.machines.executor import ExecutorTrigger
from flamed.core.state import SESSION_BIND_FAILED, SESSION_RETRY_LIMIT_REACHED, ExecutorEntry
from flamed.core.turn import Turn
from protocol import backend as be
from protocol.types import Event, ExecutorState, TaskState

log = logging.getLogger("flamed.session_manager")

#: A report about an executor's life rather than about a task.
ExecutorChange = (
    be.ExecutorCreated
    | be.ExecutorBound
    | be.ExecutorBindFailed
    | be.ExecutorUnbound
    | be.ExecutorReleased
    | be.TasksReturned
)

_UNBINDABLE = frozenset({ExecutorState.Bound, ExecutorState.Binding, ExecutorState.Unbinding})
#: Where an executor bound in the turn it was created can be when its node reports it created.
_BOUND_AT_CREATION = frozenset({ExecutorState.Binding, ExecutorState.Unbinding})


def apply_reports(turn: Turn, node: str, reports: list[be.ExecutorReport]) -> None:
    """Apply the reports of one frame from the current link of `node`, in order."""
    finished: dict[str, list[r.TaskFinish]] = {}
    seen: set[tuple[str, int]] = set()
    for report in reports:
        match report:
            case be.TaskCompleted():
                _completed(turn, node, report, finished, seen)
            case _:
                _flush_finished(turn, finished)
                executor = turn.state.executors.get(report.executor_id)
                if executor is None or executor.node != node or not _executor_report(turn, executor, report):
                    turn.count("stale_reports")
    _flush_finished(turn, finished)


def lose_executor(turn: Turn, executor: ExecutorEntry, reason: str) -> None:
    """The executor is gone with its node: retry its tasks, forget it (one transaction)."""
    if executor.session_id is not None and executor.tasks:
        requeue(turn, executor.session_id, list(executor.tasks), count_retry=True, reason=reason)
    if executor.state is not ExecutorState.Released:
        _change(turn, executor, ExecutorTrigger.node_lost)
    turn.commit(r.ExecutorRemoved(time=turn.now.wall, executor_id=executor.id))
    turn.executor_unbound(executor)
    log.info("executor %s on %s: released (%s)", executor.id, executor.node, reason)


def requeue(turn: Turn, session_id: str, task_ids: list[int], *, count_retry: bool, reason: str) -> None:
    """Running tasks back to Pending (only those still Running: R9); with `count_retry`,
    a task whose retries would pass `task_retry_limit` fails instead."""
    session = turn.state.sessions[session_id]
    limit = turn.config.task_retry_limit
    wall = turn.now.wall
    again: list[int] = []
    failed: list[r.TaskFinish] = []
    for task_id in task_ids:
        task = session.live(task_id)
        if task.state is not TaskState.Running:
            continue
        if count_retry and task.retry_count + 1 > limit:
            message = f"retry limit exceeded ({task.retry_count} retries, limit {limit}); last loss: {reason}"
            failed.append(r.TaskFinish(task_id, TaskState.Failed, None, message))
        else:
            again.append(task_id)
    if failed:
        turn.commit(r.TasksFinished(time=wall, session_id=session_id, tasks=failed))
        turn.count("tasks_failed_retry_limit", len(failed))
    if again:
        record = r.TasksRequeued(
            time=wall, session_id=session_id, task_ids=again, count_retry=count_retry, reason=reason
        )
        turn.commit(record)
        turn.count("tasks_retried" if count_retry else "tasks_returned", len(again))
        log.info("session %s: %d tasks back to Pending (%s)", session_id, len(again), reason)
    turn.session_changed(session_id)


# ---------------------------------------------------------------------- completions


def _completed(
    turn: Turn,
    node: str,
    report: be.TaskCompleted,
    finished: dict[str, list[r.TaskFinish]],
    seen: set[tuple[str, int]],
) -> None:
    key = (report.session_id, report.task_id)
    state = turn.state
    executor = state.executors.get(report.executor_id)
    session = state.sessions.get(report.session_id)
    current = (
        key not in seen
        and executor is not None
        and executor.node == node
        and executor.tasks.get(report.task_id) == report.attempt
        and session is not None
        and report.task_id > session.base
        and session.tasks.runs(report.task_id, report.attempt, executor.id)
        and report.state in (TaskState.Succeed, TaskState.Failed)
    )
    if not current:
        turn.count("stale_completions_rejected")
        log.info(
            "rejected stale completion of task %s/%d attempt %d from executor %s",
            report.session_id,
            report.task_id,
            report.attempt,
            report.executor_id,
        )
        return
    seen.add(key)
    batch = finished.setdefault(report.session_id, [])
    output, task_state, message = report.output, report.state, report.message
    limit = turn.config.max_task_output_size
    if output is not None and len(output) > limit:
        turn.count("outputs_too_large")
        message = f"output of {len(output)} bytes is over limits.max_task_output_size ({limit})"
        output, task_state = None, TaskState.Failed
    batch.append(r.TaskFinish(report.task_id, task_state, output, message))


def _flush_finished(turn: Turn, finished: dict[str, list[r.TaskFinish]]) -> None:
    for session_id, tasks in finished.items():
        turn.commit(r.TasksFinished(time=turn.now.wall, session_id=session_id, tasks=tasks))
        turn.count("tasks_completed", len(tasks))
        turn.tasks_finished(session_id)
    finished.clear()


# ---------------------------------------------------------------------- executor changes


def _executor_report(turn: Turn, executor: ExecutorEntry, report: ExecutorChange) -> bool:
    """Apply one report about `executor`; False when it is not a legal move from the
    executor's state (a stale report: the caller counts it)."""
    state = executor.state
    match report:
        case be.ExecutorCreated():
            if state in _BOUND_AT_CREATION:
                return True  # bound in the turn it was created (dispatch.py): nothing to change
            if state is not ExecutorState.Void:
                return False
            _change(turn, executor, ExecutorTrigger.created)
            turn.schedule_soon()
        case be.ExecutorBound():
            if state is not ExecutorState.Binding or executor.session_id != report.session_id:
                return False
            _change(turn, executor, ExecutorTrigger.bound)
            turn.executor_bound(executor)
        case be.ExecutorBindFailed():
            if state is not ExecutorState.Binding:
                return False
            _change(turn, executor, ExecutorTrigger.bind_failed)
            _bind_failed(turn, executor, report)
        case be.ExecutorUnbound():
            if state not in _UNBINDABLE:
                return False
            _unbound(turn, executor, report)
        case be.TasksReturned():
            _tasks_returned(turn, executor, report)
        case be.ExecutorReleased():
            if state is not ExecutorState.Releasing:
                return False
            _change(turn, executor, ExecutorTrigger.released)
            turn.commit(r.ExecutorRemoved(time=turn.now.wall, executor_id=executor.id))
        case _:
            assert_never(report)
    return True


def _change(turn: Turn, executor: ExecutorEntry, trigger: ExecutorTrigger, session: str | None = None) -> None:
    before = executor.state
    turn.commit(r.ExecutorChanged(time=turn.now.wall, executor_id=executor.id, trigger=trigger, session_id=session))
    log.debug("executor %s on %s: %s -> %s (%s)", executor.id, executor.node, before, executor.state, trigger)


def _bind_failed(turn: Turn, executor: ExecutorEntry, report: be.ExecutorBindFailed) -> None:
    session = turn.state.sessions.get(report.session_id)
    if session is None:
        return
    if executor.tasks and executor.session_id == session.id:
        # Tasks launched with the bind (a cold start) never started: Pending again, before
        # the retry limit below decides what happens to the pending ones.
        requeue(turn, session.id, list(executor.tasks), count_retry=False, reason="returned unstarted: bind failed")
    wall = turn.now.wall
    message = (
        f"Executor {executor.id} on node {executor.node} failed to bind session with "
        f"return_code {report.code}: {report.message}"
    )
    log.warning("session %s: %s", session.id, message)
    event = Event(code=SESSION_BIND_FAILED, message=message, creation_time=wall)
    turn.commit(r.SessionEventRecorded(time=wall, session_id=session.id, event=event))
    limit = turn.config.session_bind_retry_limit
    if session.bind_failures < limit:
        return
    pending = len(session.pending)
    if session.bind_failures == limit:
        text = (
            f"Session retry limit reached after {session.bind_failures}/{limit} failed attempts; "
            "new executor assignment is paused"
        )
        if pending:
            text += f" until new tasks arrive; its {pending} pending tasks failed"
        event = Event(code=SESSION_RETRY_LIMIT_REACHED, message=text, creation_time=wall)
        turn.commit(r.SessionEventRecorded(time=wall, session_id=session.id, event=event))
    if pending:
        # Nothing would ever run them: tell their clients why now instead of never. The
        # session stays Open; tasks created later try to bind again. Past the limit, these
        # are the tasks launched with a bind that was under way when the limit was reached.
        reason = f"the session's instances cannot start: {message} (after {limit} failed attempts)"
        turn.commit(r.PendingTasksFailed(time=wall, session_id=session.id, reason=reason))
        turn.count("tasks_failed_bind", pending)
        turn.session_changed(session.id)


def _unbound(turn: Turn, executor: ExecutorEntry, report: be.ExecutorUnbound) -> None:
    if executor.session_id is not None and executor.tasks:
        unstarted = [k.task_id for k in report.unstarted if executor.tasks.get(k.task_id) == k.attempt]
        if unstarted:
            requeue(turn, executor.session_id, unstarted, count_retry=False, reason="returned unstarted")
        lost = list(executor.tasks)
        if lost:
            reason = f"executor {executor.id} lost its instance ({report.reason or 'unbound'})"
            requeue(turn, executor.session_id, lost, count_retry=True, reason=reason)
    if executor.state is ExecutorState.Bound:
        _change(turn, executor, ExecutorTrigger.lost)
    elif executor.state is ExecutorState.Binding:
        _change(turn, executor, ExecutorTrigger.unbind)
    _change(turn, executor, ExecutorTrigger.unbound)
    turn.executor_unbound(executor)


def _tasks_returned(turn: Turn, executor: ExecutorEntry, report: be.TasksReturned) -> None:
    """The answer to a recall, or (`waiting`) the executor's running task waits for a task of
    its own session: the tasks it names that are still on the executor in that attempt are
    Pending again (no retry counted); a waiting executor is fed no more while it holds tasks."""
    returned = report.unstarted if report.session_id == executor.session_id else []
    task_ids = [k.task_id for k in returned if executor.tasks.get(k.task_id) == k.attempt]
    if report.waiting:
        if report.session_id == executor.session_id:
            turn.executor_waiting(executor)
        reason = "handed back: the task before it waits for its own session"
    else:
        turn.recall_answered(executor, returned=task_ids)
        reason = "recalled to share the session's work"
    if task_ids and executor.session_id is not None:
        requeue(turn, executor.session_id, task_ids, count_retry=False, reason=reason)
