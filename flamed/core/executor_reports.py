"""What a node reports about its executors: task completions, creations, binds, unbinds, releases.

`apply_reports` turns one `Reports` frame of a current link into records; `lose_executor` forgets
an executor that went away with its node. Both only decide: they commit records and tell the
dispatcher, and send nothing themselves.

Rules:
- a completion is recorded only if the task is Running in that attempt on that executor, once
  per frame; anything else is a stale completion, counted and dropped;
- an executor report is applied only if the executor is on the reporting node and the report is
  a legal move from its current state; anything else is a stale report, counted and dropped;
- completions are committed in one `TasksFinished` per session, flushed before any executor
  report so the records keep the order of the frame;
- an executor that loses its instance or its node has its tasks retried.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flamed.core import records as r
from flamed.core.machines.executor import ExecutorTrigger
from flamed.core.state import SESSION_BIND_FAILED, SESSION_RETRY_LIMIT_REACHED, ExecutorEntry
from protocol import backend as be
from protocol.types import Event, ExecutorState, TaskState

if TYPE_CHECKING:
    from flamed.core.controller import Controller
    from flamed.core.links import NodeLink
    from flamed.core.turn import Now

log = logging.getLogger("flamed.session_manager")


def apply_reports(ctl: Controller, link: NodeLink, reports: list[be.ExecutorReport], now: Now) -> None:
    """Apply the reports of one frame from `link`, in order."""
    finished: dict[str, list[r.TaskFinish]] = {}
    seen: set[tuple[str, int]] = set()
    for report in reports:
        if isinstance(report, be.TaskCompleted):
            _completed(ctl, link, report, finished, seen)
            continue
        _flush_finished(ctl, finished, now)
        executor = ctl.state.executors.get(report.executor_id)
        if executor is None or executor.node != link.name:
            ctl.counters["stale_reports"] += 1
            continue
        _executor_report(ctl, executor, report, now)
    _flush_finished(ctl, finished, now)


def lose_executor(ctl: Controller, executor: ExecutorEntry, reason: str, now: Now) -> None:
    """The executor is gone with its node: retry its tasks, forget it (one transaction)."""
    if executor.session_id is not None and executor.tasks:
        ctl.dispatcher.requeue(executor.session_id, list(executor.tasks), True, reason, now)
    if executor.state is not ExecutorState.Released:
        _change(ctl, executor, ExecutorTrigger.node_lost, now)
    ctl.commit(r.ExecutorRemoved(time=now.wall, executor_id=executor.id))
    ctl.dispatcher.executor_unbound(executor)
    log.info("executor %s on %s: released (%s)", executor.id, executor.node, reason)


# ---------------------------------------------------------------------- completions


def _completed(
    ctl: Controller,
    link: NodeLink,
    report: be.TaskCompleted,
    finished: dict[str, list[r.TaskFinish]],
    seen: set[tuple[str, int]],
) -> None:
    key = (report.session_id, report.task_id)
    executor = ctl.state.executors.get(report.executor_id)
    session = ctl.state.sessions.get(report.session_id)
    task = session.task(report.task_id) if session else None
    current = (
        key not in seen
        and executor is not None
        and executor.node == link.name
        and executor.tasks.get(report.task_id) == report.attempt
        and task is not None
        and task.state is TaskState.Running
        and task.attempt == report.attempt
        and task.executor_id == executor.id
        and report.state in (TaskState.Succeed, TaskState.Failed)
    )
    if not current:
        ctl.counters["stale_completions_rejected"] += 1
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
    output, state, message = report.output, report.state, report.message
    limit = ctl.config.max_task_output_size
    if output is not None and len(output) > limit:
        ctl.counters["outputs_too_large"] += 1
        message = f"output of {len(output)} bytes is over limits.max_task_output_size ({limit})"
        output, state = None, TaskState.Failed
    batch.append(r.TaskFinish(report.task_id, state, output, message))


def _flush_finished(ctl: Controller, finished: dict[str, list[r.TaskFinish]], now: Now) -> None:
    for session_id, tasks in finished.items():
        ctl.commit(r.TasksFinished(time=now.wall, session_id=session_id, tasks=tasks))
        ctl.counters["tasks_completed"] += len(tasks)
        ctl.dispatcher.tasks_finished(session_id, now)
    finished.clear()


# ---------------------------------------------------------------------- executor changes


def _executor_report(ctl: Controller, executor: ExecutorEntry, report: be.ExecutorReport, now: Now) -> None:
    state = executor.state
    match report:
        case be.ExecutorCreated() if state is ExecutorState.Void:
            _change(ctl, executor, ExecutorTrigger.created, now)
            ctl.dispatcher.schedule_soon()
        case be.ExecutorBound() if state is ExecutorState.Binding and executor.session_id == report.session_id:
            _change(ctl, executor, ExecutorTrigger.bound, now)
            ctl.dispatcher.executor_bound(executor, now)
        case be.ExecutorBindFailed() if state is ExecutorState.Binding:
            _change(ctl, executor, ExecutorTrigger.bind_failed, now)
            _bind_failed(ctl, executor, report, now)
        case be.ExecutorUnbound() if state in (
            ExecutorState.Bound,
            ExecutorState.Binding,
            ExecutorState.Unbinding,
        ):
            _unbound(ctl, executor, report, now)
        case be.TasksReturned():
            returned = report.unstarted if report.session_id == executor.session_id else []
            task_ids = [k.task_id for k in returned if executor.tasks.get(k.task_id) == k.attempt]
            ctl.dispatcher.tasks_returned(executor, task_ids, now)
        case be.ExecutorReleased() if state is ExecutorState.Releasing:
            _change(ctl, executor, ExecutorTrigger.released, now)
            ctl.commit(r.ExecutorRemoved(time=now.wall, executor_id=executor.id))
        case _:
            ctl.counters["stale_reports"] += 1


def _change(
    ctl: Controller, executor: ExecutorEntry, trigger: ExecutorTrigger, now: Now, session: str | None = None
) -> None:
    before = executor.state
    ctl.commit(r.ExecutorChanged(time=now.wall, executor_id=executor.id, trigger=trigger, session_id=session))
    log.debug("executor %s on %s: %s -> %s (%s)", executor.id, executor.node, before, executor.state, trigger)


def _bind_failed(ctl: Controller, executor: ExecutorEntry, report: be.ExecutorBindFailed, now: Now) -> None:
    session = ctl.state.sessions.get(report.session_id)
    if session is None:
        return
    message = (
        f"Executor {executor.id} on node {executor.node} failed to bind session with "
        f"return_code {report.code}: {report.message}"
    )
    log.warning("session %s: %s", session.id, message)
    event = Event(code=SESSION_BIND_FAILED, message=message, creation_time=now.wall)
    ctl.commit(r.SessionEventRecorded(time=now.wall, session_id=session.id, event=event))
    limit = ctl.config.session_bind_retry_limit
    if session.bind_failures == limit:
        pending = len(session.pending)
        text = (
            f"Session retry limit reached after {session.bind_failures}/{limit} failed attempts; "
            "new executor assignment is paused"
        )
        if pending:
            text += f" until new tasks arrive; its {pending} pending tasks failed"
        event = Event(code=SESSION_RETRY_LIMIT_REACHED, message=text, creation_time=now.wall)
        ctl.commit(r.SessionEventRecorded(time=now.wall, session_id=session.id, event=event))
        if pending:
            # Nothing would ever run them: tell their clients why now instead of never. The
            # session stays Open; tasks created later try to bind again.
            reason = f"the session's instances cannot start: {message} (after {limit} failed attempts)"
            ctl.commit(r.PendingTasksFailed(time=now.wall, session_id=session.id, reason=reason))
            ctl.counters["tasks_failed_bind"] += pending
            ctl.dispatcher.session_changed(session.id)


def _unbound(ctl: Controller, executor: ExecutorEntry, report: be.ExecutorUnbound, now: Now) -> None:
    dispatcher = ctl.dispatcher
    if executor.session_id is not None and executor.tasks:
        unstarted = [k.task_id for k in report.unstarted if executor.tasks.get(k.task_id) == k.attempt]
        if unstarted:
            dispatcher.requeue(executor.session_id, unstarted, False, "returned unstarted", now)
        lost = list(executor.tasks)
        if lost:
            reason = f"executor {executor.id} lost its instance ({report.reason or 'unbound'})"
            dispatcher.requeue(executor.session_id, lost, True, reason, now)
    if executor.state is ExecutorState.Bound:
        _change(ctl, executor, ExecutorTrigger.lost, now)
    elif executor.state is ExecutorState.Binding:
        _change(ctl, executor, ExecutorTrigger.unbind, now)
    _change(ctl, executor, ExecutorTrigger.unbound, now)
    dispatcher.executor_unbound(executor)
