"""Client requests on the work clients submit: applications, sessions, tasks and task watches.

Rules: names and specs are validated before anything is committed; an application with open
sessions cannot be updated or unregistered; a session takes tasks only while Open, cannot close
with running tasks and cannot be deleted until Closed; a `CreateTasks` is taken whole or not at
all (size and count limits are checked for every input first). A change that gives the
dispatcher work (a new or closed session, new tasks) tells it. Task lists are paged
(`pages.py`); watches are limited per request, per client and in all, counting the ids watched.

Each request is served on the turn of its input (`turn.py`), by the method the controller's
route names for its type; `client` is who the request speaks for (the per-client limits). The
group keeps one count of its own, the tasks held in all sessions (limits.max_tasks), which it
learns from the records committed (`note`) and counts again whenever the state is another
object (recovery, a rolled-back turn).
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from flamed.core import pages, validation
from flamed.core import records as r
from flamed.core.requests import RequestError
from flamed.core.state import ClusterState, SessionEntry
from flamed.core.tasks import TaskEntry
from flamed.core.turn import Turn
from flamed.core.views import session_view, task_view
from flamed.core.watches import Watch, Watches
from protocol import backend as be
from protocol import frontend as fe
from protocol.errors import ErrorCode
from protocol.types import Application, ApplicationSpec, SessionSpec, SessionState, Task, TaskState

#: Longest `CreateTasks.key`: keys are kept with their session for as long as it exists.
MAX_KEY_LENGTH = 128


def _session(state: ClusterState, session_id: str) -> SessionEntry:
    session = state.sessions.get(session_id)
    if session is None:
        raise RequestError(ErrorCode.NotFound, _missing_session(state, session_id))
    return session


def _missing_session(state: ClusterState, session_id: str) -> str:
    """Why there is no session `session_id`: retention deleted it, or it never existed."""
    expired = state.expired_sessions.get(session_id)
    if expired is not None:
        reason, when = expired
        at = datetime.fromtimestamp(when / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (
            f"session {session_id!r} expired under retention ({reason}): closed, then deleted with its "
            f"tasks at {at} (see [retention] in the config)"
        )
    return f"session {session_id!r} not found"


def _task(state: ClusterState, session_id: str, task_id: int) -> tuple[SessionEntry, TaskEntry]:
    session = _session(state, session_id)
    task = session.task(task_id)
    if task is None:
        if session.was_expired(task_id):
            raise RequestError(
                ErrorCode.NotFound,
                f"task {task_id} of session {session_id} expired under retention (max_finished_tasks): "
                "it had finished and was deleted (see [retention] in the config)",
            )
        raise RequestError(ErrorCode.NotFound, f"task {task_id} not found in session {session_id}")
    return session, task


def _application(state: ClusterState, name: str) -> Application:
    application = state.applications.get(name)
    if application is None:
        raise RequestError(ErrorCode.NotFound, f"application {name!r} not found")
    return application


def _check(message: str | None, code: ErrorCode = ErrorCode.InvalidArgument) -> None:
    if message is not None:
        raise RequestError(code, message)


def _open_sessions_of(state: ClusterState, application: str) -> list[str]:
    return [s.id for s in state.sessions.values() if s.spec.application == application and s.state is SessionState.Open]


class SessionRequests:
    def __init__(self, watches: Watches) -> None:
        self.watches = watches
        #: tasks held in all sessions (limits.max_tasks), for the state `_tasks_held_of`
        self._tasks_held = 0
        self._tasks_held_of: ClusterState | None = None

    # ------------------------------------------------------------------ tasks held

    def note(self, record: r.AnyRecord, state: ClusterState) -> None:
        """A record is about to be applied to `state`: keep the count of tasks held."""
        if self._tasks_held_of is state:
            if isinstance(record, r.TasksCreated):
                self._tasks_held += len(record.inputs)
            elif isinstance(record, r.SessionDeleted):
                self._tasks_held -= state.sessions[record.session_id].held
            elif isinstance(record, r.SessionsExpired):
                self._tasks_held -= sum(state.sessions[s].held for s in record.session_ids)
            elif isinstance(record, r.TasksExpired):
                session = state.sessions[record.session_id]
                self._tasks_held -= sum(
                    1 for first, last in record.ranges for i in range(first, last + 1) if session.task(i) is not None
                )

    def _held(self, state: ClusterState) -> int:
        """Tasks in all sessions (limits.max_tasks)."""
        if self._tasks_held_of is not state:
            self._tasks_held = sum(s.held for s in state.sessions.values())
            self._tasks_held_of = state
        return self._tasks_held

    # ------------------------------------------------------------------ applications

    @staticmethod
    def _save_application(turn: Turn, name: str, spec: ApplicationSpec, version: int) -> fe.Message:
        _check(validation.check_name("application", name))
        _check(validation.check_application_spec(spec))
        wall = turn.now.wall
        application = Application(name=name, spec=spec, creation_time=wall, version=version)
        turn.commit(r.ApplicationSaved(time=wall, application=application))
        return fe.ApplicationReply(application=application)

    def register_default_application(self, turn: Turn, name: str, spec: ApplicationSpec) -> None:
        """At start: register a shipped application, or refresh it if its spec changed."""
        existing = turn.state.applications.get(name)
        if existing is None or existing.spec != spec:
            version = existing.version + 1 if existing else 1
            self._save_application(turn, name, spec, version)

    def register_application(self, turn: Turn, request: fe.RegisterApplication) -> fe.Message:
        if request.name in turn.state.applications:
            raise RequestError(ErrorCode.AlreadyExists, f"application {request.name!r} already exists")
        return self._save_application(turn, request.name, request.spec, 1)

    def update_application(self, turn: Turn, request: fe.UpdateApplication) -> fe.Message:
        existing = _application(turn.state, request.name)
        if open_ids := _open_sessions_of(turn.state, request.name):
            raise RequestError(
                ErrorCode.InvalidState,
                f"application {request.name!r} has open sessions ({', '.join(open_ids[:5])}); close them first",
            )
        return self._save_application(turn, request.name, request.spec, existing.version + 1)

    @staticmethod
    def unregister_application(turn: Turn, request: fe.UnregisterApplication) -> fe.Message:
        _application(turn.state, request.name)
        if open_ids := _open_sessions_of(turn.state, request.name):
            raise RequestError(
                ErrorCode.InvalidState,
                f"application {request.name!r} has open sessions ({', '.join(open_ids[:5])}); close them first",
            )
        turn.commit(r.ApplicationRemoved(time=turn.now.wall, name=request.name))
        # Its installed packages go from every node (a node away now is told by the
        # application list of its next registration).
        for node in turn.state.nodes:
            turn.send(node, be.RemoveApplication(executor_id="", application=request.name))
        return fe.Ok()

    @staticmethod
    def get_application(turn: Turn, request: fe.GetApplication) -> fe.Message:
        return fe.ApplicationReply(application=_application(turn.state, request.name))

    @staticmethod
    def list_applications(turn: Turn) -> fe.Message:
        return fe.ApplicationsReply(applications=sorted(turn.state.applications.values(), key=lambda a: a.name))

    # ------------------------------------------------------------------ sessions

    @staticmethod
    def _resolve_spec(turn: Turn, session_id: str, spec: SessionSpec) -> SessionSpec:
        _check(validation.check_name("session", session_id))
        _check(validation.check_session_spec(spec))
        config = turn.config
        if spec.common_data is not None and len(spec.common_data) > config.max_common_data_size:
            raise RequestError(
                ErrorCode.TooLarge,
                f"common data of session {session_id} is {len(spec.common_data)} bytes; the limit is "
                f"{config.max_common_data_size} (limits.max_common_data_size)",
            )
        application = _application(turn.state, spec.application)
        if application.state != "Enabled":
            raise RequestError(ErrorCode.InvalidState, f"application {spec.application!r} is disabled")
        return msgspec.structs.replace(spec, resreq=spec.resreq or config.default_resreq, batch_size=1)

    def create_session(self, turn: Turn, request: fe.CreateSession) -> fe.Message:
        sessions, config = turn.state.sessions, turn.config
        if request.session_id in sessions:
            raise RequestError(ErrorCode.AlreadyExists, f"session {request.session_id!r} already exists")
        spec = self._resolve_spec(turn, request.session_id, request.spec)
        if len(sessions) >= config.max_sessions:
            raise RequestError(
                ErrorCode.LimitExceeded,
                f"the session manager holds {config.max_sessions} sessions (limits.max_sessions); "
                "delete closed sessions first",
            )
        turn.commit(r.SessionCreated(time=turn.now.wall, session_id=request.session_id, spec=spec))
        turn.session_changed(request.session_id)
        return fe.SessionReply(session=session_view(sessions[request.session_id]))

    def open_session(self, turn: Turn, request: fe.OpenSession) -> fe.Message:
        session = turn.state.sessions.get(request.session_id)
        if session is None:
            if request.spec is None:
                raise RequestError(ErrorCode.NotFound, _missing_session(turn.state, request.session_id))
            return self.create_session(turn, fe.CreateSession(session_id=request.session_id, spec=request.spec))
        if session.state is not SessionState.Open:
            raise RequestError(ErrorCode.InvalidArgument, f"session {request.session_id!r} is not open")
        if request.spec is not None:
            mismatch = validation.spec_mismatch(session.spec, request.spec)
            if mismatch:
                raise RequestError(ErrorCode.InvalidArgument, f"session {session.id} spec mismatch: {mismatch}")
        return fe.SessionReply(session=session_view(session))

    @staticmethod
    def get_session(turn: Turn, request: fe.GetSession) -> fe.Message:
        return fe.SessionReply(session=session_view(_session(turn.state, request.session_id)))

    @staticmethod
    def list_sessions(turn: Turn) -> fe.Message:
        return fe.SessionsReply(sessions=[session_view(s) for s in turn.state.sessions.values()])

    @staticmethod
    def close_session(turn: Turn, request: fe.CloseSession) -> fe.Message:
        session = _session(turn.state, request.session_id)
        if session.state is SessionState.Open:
            running = session.counts[TaskState.Running]
            if running:
                raise RequestError(
                    ErrorCode.InvalidState,
                    f"cannot close session {session.id} with {running} running tasks; wait for them to finish",
                )
            turn.commit(r.SessionClosed(time=turn.now.wall, session_id=session.id))
            turn.session_changed(session.id)
        return fe.SessionReply(session=session_view(session))

    @staticmethod
    def delete_session(turn: Turn, request: fe.DeleteSession) -> fe.Message:
        session = _session(turn.state, request.session_id)
        if session.state is not SessionState.Closed:
            raise RequestError(ErrorCode.InvalidState, f"session {session.id} is open; close it before deleting it")
        view = session_view(session)
        turn.commit(r.SessionDeleted(time=turn.now.wall, session_id=session.id))
        return fe.SessionReply(session=view)

    # ------------------------------------------------------------------ tasks

    def create_tasks(self, turn: Turn, peer: bytes, client: bytes, request: fe.CreateTasks) -> fe.Message:
        session = _session(turn.state, request.session_id)
        config = turn.config
        if request.key:
            if len(request.key) > MAX_KEY_LENGTH:
                raise RequestError(
                    ErrorCode.InvalidArgument, f"key is {len(request.key)} characters; at most {MAX_KEY_LENGTH}"
                )
            if request.key in session.batches:
                return self._repeated(turn, peer, client, request, session)
        if session.state is not SessionState.Open:
            raise RequestError(ErrorCode.InvalidState, f"session {session.id} is closed; it takes no new tasks")
        if not request.inputs:
            raise RequestError(ErrorCode.InvalidArgument, "CreateTasks needs at least one input")
        # The tasks it holds, not those it ever created: retention expires the oldest finished
        # tasks of a long-lived session, which may then take new ones for as long as it is open.
        if session.held + len(request.inputs) > config.max_tasks_per_session:
            raise RequestError(
                ErrorCode.LimitExceeded,
                f"session {session.id} would hold more than {config.max_tasks_per_session} tasks "
                "(limits.max_tasks_per_session; finished tasks go under [retention])",
            )
        if self._held(turn.state) + len(request.inputs) > config.max_tasks:
            raise RequestError(
                ErrorCode.LimitExceeded,
                f"the session manager would hold more than {config.max_tasks} tasks (limits.max_tasks); "
                "delete closed sessions first",
            )
        limit = config.max_task_input_size
        for index, data in enumerate(request.inputs):
            if data is not None and len(data) > limit:
                raise RequestError(
                    ErrorCode.TooLarge,
                    f"input {index} is {len(data)} bytes; the limit is {limit} (limits.max_task_input_size); "
                    "no task of this request was created",
                )
        if request.watch:
            self._check_watch_room(turn, peer, client, request.request_id, len(request.inputs))
        first = session.task_count + 1
        created = r.TasksCreated(
            time=turn.now.wall, session_id=session.id, first_id=first, inputs=request.inputs, key=request.key
        )
        turn.commit(created)
        turn.count("tasks_created", len(request.inputs))
        turn.session_changed(session.id)
        task_ids = list(range(first, first + len(request.inputs)))
        if request.watch:
            self._watch_results(turn, peer, client, request, task_ids)
        return fe.TasksCreated(session_id=session.id, task_ids=task_ids)

    def _repeated(
        self, turn: Turn, peer: bytes, client: bytes, request: fe.CreateTasks, session: SessionEntry
    ) -> fe.Message:
        """A key seen before: the client did not get the first answer (a dropped connection)
        and sent the batch again. Nothing is created; the first answer is given again, in any
        session state, and with `watch` the results follow (those already terminal at once)."""
        first, count = session.batches[request.key]
        if count != len(request.inputs):
            raise RequestError(
                ErrorCode.InvalidArgument,
                f"key {request.key!r} was used in session {session.id} for {count} tasks, not {len(request.inputs)}",
            )
        task_ids = list(range(first, first + count))
        turn.count("create_tasks_repeated")
        if request.watch:
            held = [t for t in task_ids if session.task(t) is not None]  # expired ones are not pushed
            self._check_watch_room(turn, peer, client, request.request_id, len(held))
            self._watch_results(turn, peer, client, request, held)
            turn.state.touch(session.id, task_ids)  # the terminal ones are pushed now
        return fe.TasksCreated(session_id=session.id, task_ids=task_ids)

    def _watch_results(
        self, turn: Turn, peer: bytes, client: bytes, request: fe.CreateTasks, task_ids: list[int]
    ) -> None:
        """Push each of `task_ids` (of the request's session) once, when it is terminal."""
        session_id = request.session_id
        watch = Watch(
            peer, request.request_id, session_id, set(task_ids), include_data=True, terminal_only=True, client=client
        )
        self.watches.add_results(watch, turn.state.sessions[session_id])

    def _check_watch_room(self, turn: Turn, peer: bytes, client: bytes, request_id: int, ids: int) -> None:
        """Refuse a watch of `ids` task ids that would take its client or all clients past a
        limit (a watch it replaces, same peer and request id, makes room first)."""
        config, watches = turn.config, self.watches
        replaced = watches.get(peer, request_id)
        replacing = replaced is not None and replaced.client == client
        freed = len(replaced.remaining or ()) if replaced is not None and replacing else 0
        if not replacing and watches.count(client) >= config.max_watches_per_client:
            raise RequestError(
                ErrorCode.LimitExceeded,
                f"this client has {config.max_watches_per_client} open watches "
                "(limits.max_watches_per_client); wait for some to finish",
            )
        if watches.watched_by(client) - freed + ids > config.max_watched_tasks_per_client:
            raise RequestError(
                ErrorCode.LimitExceeded,
                f"this client watches {watches.watched_by(client)} tasks; {ids} more would pass "
                f"{config.max_watched_tasks_per_client} (limits.max_watched_tasks_per_client); "
                "wait for results or watch fewer tasks",
            )
        if watches.total_watched - freed + ids > config.max_watched_tasks:
            raise RequestError(
                ErrorCode.LimitExceeded,
                f"clients watch {watches.total_watched} tasks; {ids} more would pass {config.max_watched_tasks} "
                "(limits.max_watched_tasks); try again later",
            )

    @staticmethod
    def get_task(turn: Turn, request: fe.GetTask) -> fe.Message:
        session, task = _task(turn.state, request.session_id, request.task_id)
        return fe.TaskReply(task=task_view(session.id, task))

    @staticmethod
    def list_tasks(turn: Turn, request: fe.ListTasks) -> fe.Message:
        """One page from task id `cursor`; `next_cursor` 0 when it is the last."""
        session = _session(turn.state, request.session_id)
        config = turn.config
        size = request.page_size if 0 < request.page_size < config.max_page_tasks else config.max_page_tasks
        start, count = max(1, request.cursor, session.base + 1), session.task_count
        lookup, include_data = session.task, request.include_data
        # Expired tasks are skipped: a page holds the held tasks from `cursor` on.
        held = (t for t in range(start, count + 1) if lookup(t) is not None)

        def view(task_id: int) -> Task:
            task = lookup(task_id)
            assert task is not None  # `held` gives held tasks only
            return task_view(session.id, task, include_data=include_data)

        tasks, _ = pages.page(held, view, size, config.max_page_bytes)
        after = tasks[-1].id + 1 if tasks else count + 1
        return fe.TasksReply(tasks=tasks, next_cursor=after if after <= count else 0)

    def watch_tasks(self, turn: Turn, peer: bytes, client: bytes, request: fe.WatchTasks) -> None:
        """Register the watch; its first `TaskUpdates` push is the reply."""
        session = _session(turn.state, request.session_id)
        remaining: set[int] | None = None
        if request.task_ids:
            limit = turn.config.max_watch_task_ids
            if len(request.task_ids) > limit:
                raise RequestError(
                    ErrorCode.LimitExceeded,
                    f"WatchTasks names {len(request.task_ids)} tasks; at most {limit} (limits.max_watch_task_ids); "
                    "send several, or watch the whole session",
                )
            remaining = set(request.task_ids)
            unknown = [t for t in remaining if session.task(t) is None]
            if unknown:
                expired = [t for t in unknown if session.was_expired(t)]
                if expired:
                    raise RequestError(
                        ErrorCode.NotFound,
                        f"tasks {sorted(expired)[:10]} of session {session.id} expired under retention "
                        "(max_finished_tasks)",
                    )
                raise RequestError(
                    ErrorCode.NotFound, f"tasks {sorted(unknown)[:10]} not found in session {session.id}"
                )
        self._check_watch_room(turn, peer, client, request.request_id, len(remaining or ()))
        watch = Watch(peer, request.request_id, session.id, remaining, include_data=request.include_data, client=client)
        self.watches.add(watch, session)
