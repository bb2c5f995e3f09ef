"""Wire views of the state: what clients see of applications, sessions, tasks, executors and
nodes. Pure functions of entries (plus `now` for ages)."""

from __future__ import annotations

from flamed.core.state import TASK_EVENT_CODES, ClusterState, ExecutorEntry, SessionEntry, TaskEntry
from protocol.types import Event, Executor, Session, Task, TaskState


def session_view(session: SessionEntry) -> Session:
    counts = session.counts
    return Session(
        id=session.id,
        spec=session.spec,
        state=session.state,
        creation_time=session.creation_time,
        completion_time=session.completion_time,
        pending=counts[TaskState.Pending],
        running=counts[TaskState.Running],
        succeed=counts[TaskState.Succeed],
        failed=counts[TaskState.Failed],
        cancelled=counts[TaskState.Cancelled],
        events=list(session.events),
    )


def task_events(task: TaskEntry) -> list[Event]:
    """Created, the unusual events (retries), running, then the terminal event with its reason."""
    events = [Event(code=0, message="Task was created with state <Pending>", creation_time=task.creation_time)]
    if task.events:
        events.extend(task.events)
    if task.start_time is not None and task.state is not TaskState.Pending:
        events.append(Event(code=1, message="Task state was updated to <Running>", creation_time=task.start_time))
    if task.state.is_terminal:
        message = task.message or f"Task was completed with state <{task.state}>"
        events.append(
            Event(code=TASK_EVENT_CODES[task.state], message=message, creation_time=task.completion_time or 0)
        )
    return events


def task_view(session_id: str, task: TaskEntry, include_data: bool = True, include_events: bool = True) -> Task:
    """The wire view of `task`; watch pushes leave out the events (GetTask gives them), which
    saves building and dropping them for every task update on the hot path."""
    return Task(
        id=task.id,
        session_id=session_id,
        state=task.state,
        input=task.input if include_data else None,
        output=task.output if include_data else None,
        creation_time=task.creation_time,
        completion_time=task.completion_time,
        attempt=task.attempt,
        retry_count=task.retry_count,
        executor_id=task.executor_id if task.state is TaskState.Running else None,
        message=task.message,
        events=task_events(task) if include_events else [],
    )


def executor_view(state: ClusterState, executor: ExecutorEntry) -> Executor:
    application = None
    if executor.session_id is not None:
        session = state.sessions.get(executor.session_id)
        application = session.spec.application if session else None
    return Executor(
        id=executor.id,
        node=executor.node,
        state=executor.state,
        resreq=executor.resreq,
        session_id=executor.session_id,
        application=application,
        task_ids=list(executor.tasks),
        creation_time=executor.creation_time,
    )
