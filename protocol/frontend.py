"""Frontend messages: clients (SDK, flmctl, flmping, flame-tui, scripts) <-> session manager.

Every request carries a client-chosen `request_id`; every reply and push echoes it, so a client
may pipeline many requests on one DEALER socket. The `type` field (the class name) selects the
message. `ClientRequest` is the union a session manager decodes; `ServerReply` the union a
client decodes.
"""

from __future__ import annotations

import msgspec

from protocol.errors import ErrorCode
from protocol.types import (
    Application,
    ApplicationSpec,
    Executor,
    Node,
    Session,
    SessionSpec,
    Task,
)


class Message(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True):
    """Base of frontend messages; `request_id` is echoed by the reply."""

    request_id: int = 0


# ---------------------------------------------------------------- requests (client -> SM)


class Hello(Message):
    """Optional first message: checks the protocol version and names the client."""

    protocol_version: int
    client: str = ""


class Ping(Message):
    """Liveness; also renews the sender's watches and subscriptions."""


class RegisterApplication(Message):
    name: str
    spec: ApplicationSpec


class UpdateApplication(Message):
    name: str
    spec: ApplicationSpec


class UnregisterApplication(Message):
    name: str


class GetApplication(Message):
    name: str


class ListApplications(Message):
    pass


class CreateSession(Message):
    session_id: str
    spec: SessionSpec


class OpenSession(Message):
    """Get-or-create: with a spec, an existing Open session must match it."""

    session_id: str
    spec: SessionSpec | None = None


class GetSession(Message):
    session_id: str


class ListSessions(Message):
    pass


class CloseSession(Message):
    session_id: str


class DeleteSession(Message):
    session_id: str


class CreateTasks(Message):
    """Creates one task per input, in order; ids are consecutive. With `watch`, the results
    follow: after `TasksCreated`, `TaskUpdates` pushes (same `request_id`, with data) carry each
    of these tasks once, when it reaches a terminal state, so a client that wants results needs
    no separate `WatchTasks` round trip. With `key` (unique in the session, at most 128
    characters), the same request sent again creates nothing and gets the first answer, so a
    client may re-send a batch whose reply a dropped connection lost."""

    session_id: str
    inputs: list[bytes | None]
    watch: bool = False
    key: str = ""


class GetTask(Message):
    session_id: str
    task_id: int


class ListTasks(Message):
    """One page of a session's tasks, in id order, from task id `cursor` (0 or 1: the first).
    A page holds at most `page_size` tasks (0: the server's maximum, `limits.max_page_tasks`)
    and at most about `limits.max_page_bytes` bytes, but always at least one task. The reply's
    `next_cursor` is where the next page starts (0: this was the last page)."""

    session_id: str
    include_data: bool = True
    cursor: int = 0
    page_size: int = 0


class WatchTasks(Message):
    """Pushes `TaskUpdates` for the tasks: first their current state, then every change until
    each is terminal. An empty `task_ids` watches every task of the session, present and future,
    until the session is closed. At most `limits.max_watch_task_ids` ids. A second `WatchTasks`
    (or `CreateTasks{watch}`) with the same `request_id` from the same client replaces the
    first. Renewed by the client's traffic; dropped when it goes silent for `client_ttl`."""

    session_id: str
    task_ids: list[int] = []
    include_data: bool = True


class ListNodes(Message):
    pass


class GetNode(Message):
    name: str


class DrainNode(Message):
    """Cordon a node: it gets no new executors; the ones it has keep working. Durable (survives
    restarts of both daemons) until `UndrainNode`. Answered with the node's `NodeReply`."""

    name: str


class UndrainNode(Message):
    """Undo `DrainNode`: the node takes new executors again. Answered with `NodeReply`."""

    name: str


class ListExecutors(Message):
    pass


class GetExecutor(Message):
    executor_id: str


class GetStats(Message):
    pass


class SubscribeCluster(Message):
    """Live cluster view for dashboards (`flame-tui`): one `ClusterSnapshot` now, then a
    `ClusterUpdates` with what changed at most every `interval` seconds (the server clamps it
    to 0.1-5 s) and at least every second (node heartbeat ages and stats, as a keep-alive).
    Renewed by the client's traffic (send `Ping`); dropped when it goes silent."""

    interval: float = 0.25
    events: int = 100  # how many recent events the snapshot carries
    closed_sessions: int = 200  # the snapshot carries every open session and this many closed


class UnsubscribeCluster(Message):
    """Ends this client's `SubscribeCluster`; answered with `Ok`."""


class CheckSessions(Message):
    """Which of these sessions exist (Open or Closed)? Answered `SessionsChecked` with the
    application of each one that does. The object cache asks it to find the objects of deleted
    sessions; at most 10,000 ids per request."""

    session_ids: list[str]


ClientRequest = (
    Hello
    | Ping
    | RegisterApplication
    | UpdateApplication
    | UnregisterApplication
    | GetApplication
    | ListApplications
    | CreateSession
    | OpenSession
    | GetSession
    | ListSessions
    | CloseSession
    | DeleteSession
    | CreateTasks
    | GetTask
    | ListTasks
    | WatchTasks
    | ListNodes
    | GetNode
    | DrainNode
    | UndrainNode
    | ListExecutors
    | GetExecutor
    | GetStats
    | SubscribeCluster
    | UnsubscribeCluster
    | CheckSessions
)


# ---------------------------------------------------------------- replies (SM -> client)


class Welcome(Message):
    protocol_version: int
    server_version: str
    cluster: str = "flame"
    #: where the object cache listens ("" = this cluster has none configured)
    cache_endpoint: str = ""
    #: open watches this client may hold (`limits.max_watches_per_client`); 0 = not said (an
    #: older session manager): the client assumes 1,000
    max_watches_per_client: int = 0


class Pong(Message):
    pass


class Ok(Message):
    pass


class Error(Message):
    code: ErrorCode
    message: str


class ApplicationReply(Message):
    application: Application


class ApplicationsReply(Message):
    applications: list[Application]


class SessionReply(Message):
    session: Session


class SessionsReply(Message):
    sessions: list[Session]


class TasksCreated(Message):
    session_id: str
    task_ids: list[int]


class TaskReply(Message):
    task: Task


class TasksReply(Message):
    """A page of `ListTasks`; `next_cursor` is the `cursor` of the next page (0: no more)."""

    tasks: list[Task]
    next_cursor: int = 0


class TaskUpdates(Message):
    """A push for a `WatchTasks` request: the tasks whose state changed (or, first, all of them).
    Paged like `TasksReply`; `more` says that further pages of this update follow at once (the
    first push of a big watch is many pages). `final`: the watch is over and nothing more comes
    under this request id (its tasks are all terminal, its session closed, or, with `reason`
    saying so, its session was deleted); a final push may carry no task."""

    tasks: list[Task]
    more: bool = False
    final: bool = False
    reason: str = ""


class NodesReply(Message):
    nodes: list[Node]


class NodeReply(Message):
    node: Node


class ExecutorsReply(Message):
    executors: list[Executor]


class ExecutorReply(Message):
    executor: Executor


class StatsReply(Message):
    """Counters and gauges by name (see PROTOCOL.md for the names)."""

    stats: dict[str, float]
    info: dict[str, str] = {}


class SessionsChecked(Message):
    """The answer to `CheckSessions`: session id -> application, for the sessions that exist."""

    sessions: dict[str, str]


class ClusterEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One state change worth showing an operator, with its reason. `kind` is `node`,
    `executor`, `session` or `task`; `subject` the node name, executor id or session id."""

    time: int  # Unix ms
    kind: str
    subject: str
    message: str


class ClusterSnapshot(Message):
    """The first push of a `SubscribeCluster`: the whole picture. Sessions come without their
    events (`GetSession` has them)."""

    nodes: list[Node]
    executors: list[Executor]
    sessions: list[Session]
    events: list[ClusterEvent] = []
    stats: dict[str, float] = {}
    server_time: int = 0  # Unix ms when it was taken


class ClusterUpdates(Message):
    """A later push of a `SubscribeCluster`: entities that changed (whole, replacing the old
    ones), ids that were removed, new events, every node's heartbeat age and fresh stats."""

    nodes: list[Node] = []
    executors: list[Executor] = []
    sessions: list[Session] = []
    removed_nodes: list[str] = []
    removed_executors: list[str] = []
    removed_sessions: list[str] = []
    events: list[ClusterEvent] = []
    heartbeat_ages: dict[str, float] = {}
    stats: dict[str, float] = {}
    server_time: int = 0


ServerReply = (
    Welcome
    | Pong
    | Ok
    | Error
    | ApplicationReply
    | ApplicationsReply
    | SessionReply
    | SessionsReply
    | TasksCreated
    | TaskReply
    | TasksReply
    | TaskUpdates
    | NodesReply
    | NodeReply
    | ExecutorsReply
    | ExecutorReply
    | StatsReply
    | ClusterSnapshot
    | ClusterUpdates
    | SessionsChecked
)
