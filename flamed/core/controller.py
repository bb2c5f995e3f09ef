"""The session manager's decisions: client requests, node messages, timers -> effects.

`Controller` is pure (DESIGN 2): no sockets, no files, no clock. The daemon calls
`handle_client`, `handle_node` and `tick` with the time, then `flush` once per loop turn, which
returns an `Outbox`: records to make durable, then replies and node messages to send. The
daemon must send nothing of an outbox before its records are durable (the durability point).

Every change goes through `commit(record)`, which applies it to the state and queues it for
the log. Client errors are answered with typed `Error` replies and never change state.
"""

from __future__ import annotations

import collections
import logging
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from flamed import __version__
from flamed.core import records as r
from flamed.core import validation
from flamed.core.dispatch import Dispatcher
from flamed.core.links import NodeLinks
from flamed.core.state import ClusterState
from flamed.core.subscriptions import Subscriptions
from flamed.core.views import executor_view, session_view, task_view
from flamed.core.watches import Watch, Watches
from protocol import backend as be
from protocol import frontend as fe
from protocol.codec import PROTOCOL_VERSION
from protocol.errors import ErrorCode
from protocol.types import (
    Application,
    ApplicationSpec,
    ResourceRequirement,
    SessionSpec,
    SessionState,
    TaskState,
)

log = logging.getLogger("flamed.session_manager")


@dataclass(frozen=True)
class Now:
    """The time of an event: monotonic seconds for timers, Unix ms for timestamps."""

    mono: float
    wall: int


@dataclass(frozen=True)
class CoreConfig:
    default_resreq: ResourceRequirement = field(default_factory=ResourceRequirement)
    heartbeat_interval: float = 1.0
    heartbeat_liveness: int = 5
    drain_timeout: float = 30.0
    task_retry_limit: int = 3
    session_bind_retry_limit: int = 5
    schedule_interval: float = 0.1
    policies: tuple[str, ...] = ("priority", "drf")
    dispatch_depth: int = 64
    max_sessions: int = 100_000
    max_tasks_per_session: int = 10_000_000
    max_task_input_size: int = 16 * 1024 * 1024
    max_task_output_size: int = 16 * 1024 * 1024
    max_common_data_size: int = 16 * 1024 * 1024
    max_watches_per_client: int = 1_000
    max_subscribers: int = 100
    client_ttl: float = 30.0
    cluster_name: str = "flame"


@dataclass
class Outbox:
    records: list[r.AnyRecord] = field(default_factory=list)
    replies: list[tuple[bytes, fe.Message]] = field(default_factory=list)
    node_messages: list[tuple[bytes, be.Message]] = field(default_factory=list)


class RequestError(Exception):
    """A client request cannot be served; becomes an `Error` reply."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def new_executor_id() -> str:
    return secrets.token_hex(5)


class Controller:
    def __init__(
        self,
        config: CoreConfig,
        state: ClusterState | None = None,
        new_id: Callable[[], str] = new_executor_id,
    ) -> None:
        self.config = config
        self.state = state or ClusterState()
        self.new_id = new_id
        self.outbox = Outbox()
        self.counters: collections.Counter[str] = collections.Counter()
        self.watches = Watches(config.client_ttl)
        self.subscriptions = Subscriptions(config.client_ttl)
        self.links = NodeLinks(self)
        self.dispatcher = Dispatcher(self)
        #: Facts about durable storage for `GetStats` (set by the daemon): numbers go to
        #: `stats`, strings to `info`, each key prefixed with `storage_`.
        self.storage_stats: Callable[[], dict[str, float | int | str]] | None = None
        self._handlers: dict[type, Callable[[bytes, object, Now], fe.Message | None]] = {
            fe.Hello: self._hello,  # type: ignore[dict-item]
            fe.Ping: lambda peer, req, now: fe.Pong(),
            fe.RegisterApplication: self._register_application,  # type: ignore[dict-item]
            fe.UpdateApplication: self._update_application,  # type: ignore[dict-item]
            fe.UnregisterApplication: self._unregister_application,  # type: ignore[dict-item]
            fe.GetApplication: self._get_application,  # type: ignore[dict-item]
            fe.ListApplications: self._list_applications,
            fe.CreateSession: self._create_session,  # type: ignore[dict-item]
            fe.OpenSession: self._open_session,  # type: ignore[dict-item]
            fe.GetSession: self._get_session,  # type: ignore[dict-item]
            fe.ListSessions: self._list_sessions,
            fe.CloseSession: self._close_session,  # type: ignore[dict-item]
            fe.DeleteSession: self._delete_session,  # type: ignore[dict-item]
            fe.CreateTasks: self._create_tasks,  # type: ignore[dict-item]
            fe.GetTask: self._get_task,  # type: ignore[dict-item]
            fe.ListTasks: self._list_tasks,  # type: ignore[dict-item]
            fe.WatchTasks: self._watch_tasks,  # type: ignore[dict-item]
            fe.ListNodes: lambda peer, req, now: fe.NodesReply(nodes=self.links.node_views(now.mono)),
            fe.GetNode: self._get_node,  # type: ignore[dict-item]
            fe.DrainNode: self._drain_node,  # type: ignore[dict-item]
            fe.UndrainNode: self._undrain_node,  # type: ignore[dict-item]
            fe.ListExecutors: self._list_executors,
            fe.GetExecutor: self._get_executor,  # type: ignore[dict-item]
            fe.GetStats: self._get_stats,
            fe.SubscribeCluster: self._subscribe_cluster,  # type: ignore[dict-item]
            fe.UnsubscribeCluster: self._unsubscribe_cluster,
        }

    # ------------------------------------------------------------------ entry points

    def commit(self, record: r.AnyRecord) -> None:
        """Apply a change and queue it for the log (the only way state changes)."""
        self.subscriptions.note(record, self)
        self.state.apply(record)
        self.outbox.records.append(record)

    def handle_client(self, peer: bytes, request: fe.ClientRequest, now: Now) -> None:
        self.counters["client_requests"] += 1
        self.watches.seen(peer, now.mono)
        self.subscriptions.seen(peer, now.mono)
        handler = self._handlers[type(request)]
        try:
            reply = handler(peer, request, now)
        except RequestError as exc:
            self.counters["client_errors"] += 1
            reply = fe.Error(code=exc.code, message=exc.message)
        if reply is not None:
            reply.request_id = request.request_id
            self.outbox.replies.append((peer, reply))

    def reject_client_frame(self, peer: bytes, code: ErrorCode, message: str, request_id: int = 0) -> None:
        """A frontend frame that did not decode: answer it (echoing its request id when it could
        be read) and count it."""
        self.counters["bad_client_frames"] += 1
        self.outbox.replies.append((peer, fe.Error(code=code, message=message, request_id=request_id)))

    def handle_node(self, peer: bytes, message: be.NodeMessage, now: Now) -> None:
        self.links.handle(peer, message, now)

    def reject_node_frame(self, peer: bytes, code: ErrorCode, message: str) -> None:
        self.counters["bad_node_frames"] += 1
        self.outbox.node_messages.append((peer, be.Error(code=code, message=message)))

    def peer_unreachable(self, peer: bytes) -> None:
        """The frontend socket could not deliver to `peer`: forget its watches."""
        self.watches.drop_peer(peer)
        self.subscriptions.remove(peer)

    def tick(self, now: Now) -> None:
        """Timers: node liveness and drains, watch expiry, periodic scheduling."""
        self.links.tick(now)
        self.watches.expire(now.mono)
        self.subscriptions.expire(now.mono)
        self.dispatcher.tick(now)

    def next_deadline(self) -> float:
        return min(self.links.next_deadline(), self.dispatcher.next_deadline(), self.subscriptions.next_deadline())

    def flush(self, now: Now) -> Outbox:
        """End of a loop turn: dispatch and schedule, then hand over everything to do."""
        self.dispatcher.run(now)
        self.watches.collect(self.state)
        self.links.flush(now)
        outbox, self.outbox = self.outbox, Outbox()
        outbox.replies.extend(self.watches.take_pushes())
        outbox.replies.extend(self.subscriptions.collect(self, now))
        return outbox

    # ------------------------------------------------------------------ helpers

    def _session(self, session_id: str):  # type: ignore[no-untyped-def]
        session = self.state.sessions.get(session_id)
        if session is None:
            raise RequestError(ErrorCode.NotFound, f"session {session_id!r} not found")
        return session

    def _application(self, name: str) -> Application:
        application = self.state.applications.get(name)
        if application is None:
            raise RequestError(ErrorCode.NotFound, f"application {name!r} not found")
        return application

    @staticmethod
    def _check(message: str | None, code: ErrorCode = ErrorCode.InvalidArgument) -> None:
        if message is not None:
            raise RequestError(code, message)

    # ------------------------------------------------------------------ handlers

    def _hello(self, peer: bytes, request: fe.Hello, now: Now) -> fe.Message:
        if request.protocol_version != PROTOCOL_VERSION:
            raise RequestError(
                ErrorCode.VersionMismatch,
                f"client speaks protocol {request.protocol_version}, this session manager {PROTOCOL_VERSION}",
            )
        return fe.Welcome(
            protocol_version=PROTOCOL_VERSION, server_version=__version__, cluster=self.config.cluster_name
        )

    def _save_application(self, name: str, spec: ApplicationSpec, now: Now, version: int) -> fe.Message:
        self._check(validation.check_name("application", name))
        self._check(validation.check_application_spec(spec))
        application = Application(name=name, spec=spec, creation_time=now.wall, version=version)
        self.commit(r.ApplicationSaved(time=now.wall, application=application))
        return fe.ApplicationReply(application=application)

    def register_default_application(self, name: str, spec: ApplicationSpec, now: Now) -> None:
        """At start: register a shipped application, or refresh it if its spec changed."""
        existing = self.state.applications.get(name)
        if existing is None or existing.spec != spec:
            version = existing.version + 1 if existing else 1
            self._save_application(name, spec, now, version)

    def _register_application(self, peer: bytes, request: fe.RegisterApplication, now: Now) -> fe.Message:
        if request.name in self.state.applications:
            raise RequestError(ErrorCode.AlreadyExists, f"application {request.name!r} already exists")
        return self._save_application(request.name, request.spec, now, 1)

    def _open_sessions_of(self, application: str) -> list[str]:
        return [
            s.id
            for s in self.state.sessions.values()
            if s.spec.application == application and s.state is SessionState.Open
        ]

    def _update_application(self, peer: bytes, request: fe.UpdateApplication, now: Now) -> fe.Message:
        existing = self._application(request.name)
        if open_ids := self._open_sessions_of(request.name):
            raise RequestError(
                ErrorCode.InvalidState,
                f"application {request.name!r} has open sessions ({', '.join(open_ids[:5])}); close them first",
            )
        return self._save_application(request.name, request.spec, now, existing.version + 1)

    def _unregister_application(self, peer: bytes, request: fe.UnregisterApplication, now: Now) -> fe.Message:
        self._application(request.name)
        if open_ids := self._open_sessions_of(request.name):
            raise RequestError(
                ErrorCode.InvalidState,
                f"application {request.name!r} has open sessions ({', '.join(open_ids[:5])}); close them first",
            )
        self.commit(r.ApplicationRemoved(time=now.wall, name=request.name))
        return fe.Ok()

    def _get_application(self, peer: bytes, request: fe.GetApplication, now: Now) -> fe.Message:
        return fe.ApplicationReply(application=self._application(request.name))

    def _list_applications(self, peer: bytes, request: object, now: Now) -> fe.Message:
        return fe.ApplicationsReply(applications=sorted(self.state.applications.values(), key=lambda a: a.name))

    def _resolve_spec(self, session_id: str, spec: SessionSpec) -> SessionSpec:
        self._check(validation.check_name("session", session_id))
        self._check(validation.check_session_spec(spec))
        if spec.common_data is not None and len(spec.common_data) > self.config.max_common_data_size:
            raise RequestError(
                ErrorCode.TooLarge,
                f"common data of session {session_id} is {len(spec.common_data)} bytes; the limit is "
                f"{self.config.max_common_data_size} (limits.max_common_data_size)",
            )
        application = self._application(spec.application)
        if application.state != "Enabled":
            raise RequestError(ErrorCode.InvalidState, f"application {spec.application!r} is disabled")
        return msgspec.structs.replace(spec, resreq=spec.resreq or self.config.default_resreq, batch_size=1)

    def _create_session(self, peer: bytes, request: fe.CreateSession, now: Now) -> fe.Message:
        if request.session_id in self.state.sessions:
            raise RequestError(ErrorCode.AlreadyExists, f"session {request.session_id!r} already exists")
        spec = self._resolve_spec(request.session_id, request.spec)
        if len(self.state.sessions) >= self.config.max_sessions:
            raise RequestError(
                ErrorCode.LimitExceeded,
                f"the session manager holds {self.config.max_sessions} sessions (limits.max_sessions); "
                "delete closed sessions first",
            )
        self.commit(r.SessionCreated(time=now.wall, session_id=request.session_id, spec=spec))
        self.dispatcher.session_changed(request.session_id)
        return fe.SessionReply(session=session_view(self.state.sessions[request.session_id]))

    def _open_session(self, peer: bytes, request: fe.OpenSession, now: Now) -> fe.Message:
        session = self.state.sessions.get(request.session_id)
        if session is None:
            if request.spec is None:
                raise RequestError(ErrorCode.NotFound, f"session {request.session_id!r} not found")
            return self._create_session(peer, fe.CreateSession(session_id=request.session_id, spec=request.spec), now)
        if session.state is not SessionState.Open:
            raise RequestError(ErrorCode.InvalidArgument, f"session {request.session_id!r} is not open")
        if request.spec is not None:
            mismatch = validation.spec_mismatch(session.spec, request.spec)
            if mismatch:
                raise RequestError(ErrorCode.InvalidArgument, f"session {session.id} spec mismatch: {mismatch}")
        return fe.SessionReply(session=session_view(session))

    def _get_session(self, peer: bytes, request: fe.GetSession, now: Now) -> fe.Message:
        return fe.SessionReply(session=session_view(self._session(request.session_id)))

    def _list_sessions(self, peer: bytes, request: object, now: Now) -> fe.Message:
        return fe.SessionsReply(sessions=[session_view(s) for s in self.state.sessions.values()])

    def _close_session(self, peer: bytes, request: fe.CloseSession, now: Now) -> fe.Message:
        session = self._session(request.session_id)
        if session.state is SessionState.Open:
            running = session.counts[TaskState.Running]
            if running:
                raise RequestError(
                    ErrorCode.InvalidState,
                    f"cannot close session {session.id} with {running} running tasks; wait for them to finish",
                )
            self.commit(r.SessionClosed(time=now.wall, session_id=session.id))
            self.dispatcher.session_changed(session.id)
        return fe.SessionReply(session=session_view(session))

    def _delete_session(self, peer: bytes, request: fe.DeleteSession, now: Now) -> fe.Message:
        session = self._session(request.session_id)
        if session.state is not SessionState.Closed:
            raise RequestError(ErrorCode.InvalidState, f"session {session.id} is open; close it before deleting it")
        view = session_view(session)
        self.commit(r.SessionDeleted(time=now.wall, session_id=session.id))
        return fe.SessionReply(session=view)

    def _create_tasks(self, peer: bytes, request: fe.CreateTasks, now: Now) -> fe.Message:
        session = self._session(request.session_id)
        if session.state is not SessionState.Open:
            raise RequestError(ErrorCode.InvalidState, f"session {session.id} is closed; it takes no new tasks")
        if not request.inputs:
            raise RequestError(ErrorCode.InvalidArgument, "CreateTasks needs at least one input")
        if len(session.tasks) + len(request.inputs) > self.config.max_tasks_per_session:
            raise RequestError(
                ErrorCode.LimitExceeded,
                f"session {session.id} would exceed {self.config.max_tasks_per_session} tasks "
                "(limits.max_tasks_per_session)",
            )
        limit = self.config.max_task_input_size
        for index, data in enumerate(request.inputs):
            if data is not None and len(data) > limit:
                raise RequestError(
                    ErrorCode.TooLarge,
                    f"input {index} is {len(data)} bytes; the limit is {limit} (limits.max_task_input_size); "
                    "no task of this request was created",
                )
        if request.watch:
            self._check_watch_limit(peer)
        first = len(session.tasks) + 1
        self.commit(r.TasksCreated(time=now.wall, session_id=session.id, first_id=first, inputs=request.inputs))
        self.counters["tasks_created"] += len(request.inputs)
        self.dispatcher.session_changed(session.id)
        task_ids = list(range(first, first + len(request.inputs)))
        if request.watch:
            watch = Watch(peer, request.request_id, session.id, set(task_ids), include_data=True, terminal_only=True)
            self.watches.add_results(watch, session, now.mono)
        return fe.TasksCreated(session_id=session.id, task_ids=task_ids)

    def _check_watch_limit(self, peer: bytes) -> None:
        if self.watches.count(peer) >= self.config.max_watches_per_client:
            raise RequestError(
                ErrorCode.LimitExceeded,
                f"this client has {self.config.max_watches_per_client} open watches "
                "(limits.max_watches_per_client); wait for some to finish",
            )

    def _task(self, session_id: str, task_id: int):  # type: ignore[no-untyped-def]
        session = self._session(session_id)
        task = session.task(task_id)
        if task is None:
            raise RequestError(ErrorCode.NotFound, f"task {task_id} not found in session {session_id}")
        return session, task

    def _get_task(self, peer: bytes, request: fe.GetTask, now: Now) -> fe.Message:
        session, task = self._task(request.session_id, request.task_id)
        return fe.TaskReply(task=task_view(session.id, task))

    def _list_tasks(self, peer: bytes, request: fe.ListTasks, now: Now) -> fe.Message:
        session = self._session(request.session_id)
        return fe.TasksReply(tasks=[task_view(session.id, t, request.include_data) for t in session.tasks])

    def _watch_tasks(self, peer: bytes, request: fe.WatchTasks, now: Now) -> fe.Message | None:
        session = self._session(request.session_id)
        remaining: set[int] | None = None
        if request.task_ids:
            remaining = set(request.task_ids)
            unknown = [t for t in remaining if session.task(t) is None]
            if unknown:
                raise RequestError(
                    ErrorCode.NotFound, f"tasks {sorted(unknown)[:10]} not found in session {session.id}"
                )
        self._check_watch_limit(peer)
        watch = Watch(peer, request.request_id, session.id, remaining, request.include_data)
        self.watches.add(watch, session, now.mono)
        return None  # the first TaskUpdates push is the reply

    def _subscribe_cluster(self, peer: bytes, request: fe.SubscribeCluster, now: Now) -> fe.Message:
        if peer not in self.subscriptions.subscribers and len(self.subscriptions) >= self.config.max_subscribers:
            raise RequestError(
                ErrorCode.LimitExceeded,
                f"{self.config.max_subscribers} clients are subscribed to the cluster (limits.max_subscribers)",
            )
        return self.subscriptions.add(peer, request, self, now)

    def _unsubscribe_cluster(self, peer: bytes, request: object, now: Now) -> fe.Message:
        self.subscriptions.remove(peer)
        return fe.Ok()

    def _get_node(self, peer: bytes, request: fe.GetNode, now: Now) -> fe.Message:
        view = self.links.node_view(request.name, now.mono)
        if view is None:
            raise RequestError(ErrorCode.NotFound, f"node {request.name!r} not found")
        return fe.NodeReply(node=view)

    def _set_drained(self, name: str, drained: bool, now: Now) -> fe.Message:
        """Cordon or uncordon a node; idempotent (no record when nothing changes)."""
        node = self.state.nodes.get(name)
        if node is None:
            raise RequestError(ErrorCode.NotFound, f"node {name!r} not found")
        if node.drained != drained:
            reason = "drained by an operator" if drained else "undrained by an operator"
            self.commit(r.NodeDrainChanged(time=now.wall, name=name, drained=drained, reason=reason))
            self.counters["node_drains" if drained else "node_undrains"] += 1
            log.info("node %s: %s", name, reason)
            self.dispatcher.schedule_soon()
        view = self.links.node_view(name, now.mono)
        assert view is not None
        return fe.NodeReply(node=view)

    def _drain_node(self, peer: bytes, request: fe.DrainNode, now: Now) -> fe.Message:
        return self._set_drained(request.name, True, now)

    def _undrain_node(self, peer: bytes, request: fe.UndrainNode, now: Now) -> fe.Message:
        return self._set_drained(request.name, False, now)

    def _list_executors(self, peer: bytes, request: object, now: Now) -> fe.Message:
        return fe.ExecutorsReply(executors=[executor_view(self.state, e) for e in self.state.executors.values()])

    def _get_executor(self, peer: bytes, request: fe.GetExecutor, now: Now) -> fe.Message:
        executor = self.state.executors.get(request.executor_id)
        if executor is None:
            raise RequestError(ErrorCode.NotFound, f"executor {request.executor_id!r} not found")
        return fe.ExecutorReply(executor=executor_view(self.state, executor))

    def stats(self) -> dict[str, float]:
        stats: dict[str, float] = {f"{k}_total": float(v) for k, v in self.counters.items()}
        task_counts: collections.Counter[str] = collections.Counter()
        for session in self.state.sessions.values():
            for task_state, count in session.counts.items():
                task_counts[task_state] += count
        stats.update({f"tasks_{k.lower()}": float(v) for k, v in task_counts.items()})
        executor_counts = collections.Counter(e.state for e in self.state.executors.values())
        stats.update({f"executors_{k.lower()}": float(v) for k, v in executor_counts.items()})
        node_counts = collections.Counter(n.state for n in self.state.nodes.values())
        stats.update({f"nodes_{k.lower()}": float(v) for k, v in node_counts.items()})
        stats["sessions"] = float(len(self.state.sessions))
        stats["watches"] = float(len(self.watches))
        stats["subscriptions"] = float(len(self.subscriptions))
        return stats

    def _get_stats(self, peer: bytes, request: object, now: Now) -> fe.Message:
        stats, info = self.stats(), {}
        if self.storage_stats is not None:
            for key, value in self.storage_stats().items():
                if isinstance(value, str):
                    info[f"storage_{key}"] = value
                else:
                    stats[f"storage_{key}"] = float(value)
        return fe.StatsReply(stats=stats, info=info)


def random_suffix(length: int = 6) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))
