"""Backend messages: executor managers <-> session manager.

The link is stateful. An executor manager sends `RegisterNode`; the session manager answers
`Registered` with a new `epoch` and the full snapshot of executors the node should hold. After
that every message on the link carries the epoch and a per-direction sequence number (`seq`,
1, 2, 3 ... after `Registered`, which is seq 0). A receiver that sees a gap or an old epoch
stops trusting its view: the session manager answers `Error(Reregister)`, the executor manager
registers again. So nothing relies on a single message arriving (ZeroMQ may drop across
reconnects); a registration always ends in a full snapshot.

Either side sends a `Heartbeat` when it has sent nothing for `heartbeat_interval`; any message
counts as a sign of life; silence for `heartbeat_interval * heartbeat_liveness` means the peer
is gone. Session-manager messages carry `ack`: the highest executor-manager `seq` whose effects
are durable; the executor manager keeps unacknowledged task results and resends them after a
re-registration for executors that the snapshot still lists.
"""

from __future__ import annotations

import msgspec

from protocol.errors import ErrorCode
from protocol.types import NodeInfo, ResourceRequirement, Shim, TaskState


class Body(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of nested (non-message) backend structs."""


class SessionContext(Body):
    session_id: str
    application: str
    common_data: bytes | None = None


class ApplicationContext(Body):
    """What an executor manager needs to start an application's instance."""

    name: str
    shim: Shim = Shim.Host
    command: str | None = None
    arguments: list[str] = []
    environments: dict[str, str] = {}
    working_directory: str | None = None
    image: str | None = None
    url: str | None = None
    installer: str | None = None


class TaskAssignment(Body):
    task_id: int
    attempt: int
    input: bytes | None = None


class TaskKey(Body):
    task_id: int
    attempt: int


# ------------------------------------------------------------ commands (SM -> EM, batched)


class Command(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True):
    executor_id: str


class CreateExecutor(Command):
    resreq: ResourceRequirement


class BindExecutor(Command):
    session: SessionContext
    application: ApplicationContext


class LaunchTasks(Command):
    """Queue tasks on a bound executor; they run one after another in order."""

    session_id: str
    tasks: list[TaskAssignment]


class UnbindExecutor(Command):
    pass


class ReleaseExecutor(Command):
    pass


class RecallTasks(Command):
    """Hand back up to `count` of the tasks of `session_id` the executor holds but has not given
    to its instance yet, the last queued first (to balance a session over executors that joined
    later). Always answered by `TasksReturned`, with no tasks if none could be spared."""

    session_id: str
    count: int


class RemoveApplication(Command):
    """The application `application` was unregistered: remove its installed packages on the
    node (`<runtime>/apps/<application>`), each once no instance of the node uses it. Not about
    one executor: `executor_id` is empty. Sent only to executor managers that list
    `"remove-application"` in `features`."""

    application: str


ExecutorCommand = (
    CreateExecutor | BindExecutor | LaunchTasks | UnbindExecutor | ReleaseExecutor | RecallTasks | RemoveApplication
)


# ------------------------------------------------------------- reports (EM -> SM, batched)


class Report(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True):
    executor_id: str


class ExecutorCreated(Report):
    pass


class ExecutorBound(Report):
    session_id: str


class ExecutorBindFailed(Report):
    """Code as Flame's BIND_RESULT_*: 10 install, 11 instance start, 12 on_session_enter, 19 other."""

    session_id: str
    code: int
    message: str


class TaskCompleted(Report):
    session_id: str
    task_id: int
    attempt: int
    state: TaskState
    output: bytes | None = None
    message: str | None = None


class ExecutorUnbound(Report):
    """The executor is unbound and its instance stopped. `unstarted` lists tasks it was given
    but never started (they go back to Pending without counting a retry)."""

    session_id: str | None = None
    unstarted: list[TaskKey] = []
    reason: str = ""


class ExecutorReleased(Report):
    pass


class TasksReturned(Report):
    """The answer to `RecallTasks`: the tasks handed back unstarted (Pending again, no retry
    counted); empty when none could be spared. With `waiting`, not an answer: the executor's
    running task waits for a task of its own session, so it hands back everything queued
    behind it (and any task launched to it until that task ends) and is given no more until
    its running task has completed."""

    session_id: str
    unstarted: list[TaskKey] = []
    waiting: bool = False


ExecutorReport = (
    ExecutorCreated
    | ExecutorBound
    | ExecutorBindFailed
    | TaskCompleted
    | ExecutorUnbound
    | ExecutorReleased
    | TasksReturned
)


# ------------------------------------------------------------------ snapshot on register


class ExecutorAssignment(Body):
    """One executor as the session manager wants it on the node (see ExecutorState)."""

    executor_id: str
    state: str
    resreq: ResourceRequirement
    session: SessionContext | None = None
    application: ApplicationContext | None = None
    tasks: list[TaskAssignment] = []


# --------------------------------------------------------------------- top-level messages


class Message(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True):
    pass


#: What this executor manager understands beyond protocol 1 as first released.
FEATURES = ["recall", "remove-application", "early-bind"]


class RegisterNode(Message):
    """EM -> SM. `incarnation` is new at every executor-manager start; `executors` are the ids
    the executor manager holds now (empty after a restart); `stopping` as in `Heartbeat` (an
    executor manager that registers again while it drains says so from the start).

    `secret`: an unguessable value the executor manager generates at start and sends with every
    registration; the session manager keeps only its hash, with the node, and takes a
    registration for a live node as "the same executor manager coming back" (keeping its
    executors) only with the same incarnation *and* secret. The incarnation is public (ListNodes
    shows it); the secret never leaves the backend link."""

    protocol_version: int
    node: NodeInfo
    incarnation: str
    executors: list[str] = []
    stopping: bool = False
    #: optional commands it understands, for a cluster that runs two versions during an upgrade:
    #: "recall" (`RecallTasks`); a session manager sends none the node did not list
    features: list[str] = []
    secret: str = ""


class Registered(Message):
    """SM -> EM: the registration is accepted. Full snapshot of the node's executors."""

    epoch: int
    executors: list[ExecutorAssignment]
    heartbeat_interval: float
    heartbeat_liveness: int
    #: the object cache's endpoint, handed to instances as FLAME_CACHE_ENDPOINT ("" = none)
    cache_endpoint: str = ""
    #: the names of the registered applications: the executor manager removes the installed
    #: packages of any other (unregistered while it was away). None: not said (an older
    #: session manager), nothing is removed.
    applications: list[str] | None = None


class Heartbeat(Message):
    """Both ways. `ack` (SM -> EM only) as in `Commands`. `stopping` (EM -> SM only): the
    executor manager is draining to stop (SIGTERM), so it takes no new executors, binds or
    tasks; it is sent at once when the drain begins and on every heartbeat after."""

    epoch: int
    seq: int
    ack: int = 0
    stopping: bool = False


class Commands(Message):
    """SM -> EM: executor commands, applied in order."""

    epoch: int
    seq: int
    commands: list[ExecutorCommand]
    ack: int = 0


class Reports(Message):
    """EM -> SM: executor facts, applied in order."""

    epoch: int
    seq: int
    reports: list[ExecutorReport]


class Goodbye(Message):
    """EM -> SM: the executor manager is stopping; its instances are stopped. The session
    manager cleans the node up at once. `incarnation` and `secret` (as in `RegisterNode`) let a
    session manager that restarted since the registration (and so knows no connection for it)
    still take the goodbye, from that executor manager only."""

    epoch: int
    seq: int
    incarnation: str = ""
    secret: str = ""


class Error(Message):
    """SM -> EM: the message was refused. `Reregister`: register again (stale epoch or a gap);
    `DuplicateNode`: another live executor manager holds the name (do not retry quickly);
    `Unauthorized`: this connection may not speak for that node (a registration that claims
    a live executor manager's incarnation without its secret, a key that is not the node's or
    is no longer allowed)."""

    code: ErrorCode
    message: str
    epoch: int = 0


NodeMessage = RegisterNode | Heartbeat | Reports | Goodbye
ManagerMessage = Registered | Heartbeat | Commands | Error
