"""Wire views of the state: what clients see of applications, sessions, tasks, executors and
nodes, and what a node is told of the session and application an executor serves. Pure
functions of entries (plus a node's link and `now` for its liveness)."""

from __future__ import annotations

from typing import Protocol

from flamed.core.node_link import LinkView
from flamed.core.state import TASK_EVENT_CODES, ClusterState, ExecutorEntry, SessionEntry
from flamed.core.tasks import TaskEntry
from protocol import backend as be
from protocol.types import Event, Executor, Node, ResourceRequirement, Session, Task, TaskState


class NodeViews(Protocol):
    """Where the views of nodes come from (the node links: a node's view needs its link)."""

    def node_view(self, state: ClusterState, name: str, now: float) -> Node | None: ...

    def node_views(self, state: ClusterState, now: float) -> list[Node]: ...


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


def task_view(session_id: str, task: TaskEntry, *, include_data: bool = True, include_events: bool = True) -> Task:
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


def node_view(state: ClusterState, name: str, link: LinkView | None, now: float) -> Node | None:
    """What clients see of node `name` (None: no such node); `link` is its link, if any."""
    node = state.nodes.get(name)
    if node is None:
        return None
    counts: dict[str, int] = {}
    used = [0, 0, 0]
    for executor in state.executors.values():
        if executor.node == name:
            counts[executor.state] = counts.get(executor.state, 0) + 1
            used[0] += executor.resreq.cpu
            used[1] += executor.resreq.memory
            used[2] += executor.resreq.gpu
    capacity = node.info.capacity
    return Node(
        name=name,
        hostname=node.info.hostname,
        state=node.state,
        connection=link.connection if link else None,
        capacity=capacity,
        allocatable=ResourceRequirement(
            cpu=max(0, capacity.cpu - used[0]),
            memory=max(0, capacity.memory - used[1]),
            gpu=max(0, capacity.gpu - used[2]),
        ),
        max_executors=node.info.max_executors,
        arch=node.info.arch,
        os=node.info.os,
        incarnation=node.incarnation,
        epoch=node.epoch,
        drained=node.drained,
        stopping=bool(link and link.stopping),
        last_heartbeat_age=(now - link.last_seen) if link and link.peer is not None else None,
        executors=counts,
    )


def session_contexts(state: ClusterState, session: SessionEntry) -> tuple[be.SessionContext, be.ApplicationContext]:
    """What a node is told of the session an executor serves and of its application."""
    spec = session.spec
    app = state.applications.get(spec.application)
    session_ctx = be.SessionContext(session_id=session.id, application=spec.application, common_data=spec.common_data)
    if app is None:
        return session_ctx, be.ApplicationContext(name=spec.application)
    a = app.spec
    return session_ctx, be.ApplicationContext(
        name=app.name,
        shim=a.shim,
        command=a.command,
        arguments=a.arguments,
        environments=a.environments,
        working_directory=a.working_directory,
        image=a.image,
        url=a.url,
        installer=a.installer,
    )
