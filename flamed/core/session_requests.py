"""Client requests on the work clients submit: applications, sessions, tasks and task watches.

Rules: names and specs are validated before anything is committed; an application with open
sessions cannot be updated or unregistered; a session takes tasks only while Open, cannot close
with running tasks and cannot be deleted until Closed; a `CreateTasks` is taken whole or not at
all (size and count limits are checked for every input first). A change that gives the
dispatcher work (a new or closed session, new tasks) tells it. Task lists are paged
(`pages.py`); watches are limited per request, per client and in all, counting the ids watched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from flamed.core import pages, validation
from flamed.core import records as r
from flamed.core.requests import Handler, RequestError, RequestHandlers
from flamed.core.views import session_view, task_view
from flamed.core.watches import Watch
from protocol import frontend as fe
from protocol.errors import ErrorCode
from protocol.types import Application, ApplicationSpec, SessionSpec, SessionState, Task, TaskState

if TYPE_CHECKING:
    from flamed.core.state import SessionEntry
    from flamed.core.turn import Now

#: Longest `CreateTasks.key`: keys are kept with their session for as long as it exists.
MAX_KEY_LENGTH = 128


class SessionRequests(RequestHandlers):
    def handlers(self) -> dict[type, Handler]:
        return {
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
        }

    # ------------------------------------------------------------------ lookups

    def _session(self, session_id: str):  # type: ignore[no-untyped-def]
        session = self.ctl.state.sessions.get(session_id)
        if session is None:
            raise RequestError(ErrorCode.NotFound, f"session {session_id!r} not found")
        return session

    def _application(self, name: str) -> Application:
        application = self.ctl.state.applications.get(name)
        if application is None:
            raise RequestError(ErrorCode.NotFound, f"application {name!r} not found")
        return application

    @staticmethod
    def _check(message: str | None, code: ErrorCode = ErrorCode.InvalidArgument) -> None:
        if message is not None:
            raise RequestError(code, message)

    # ------------------------------------------------------------------ applications

    def _save_application(self, name: str, spec: ApplicationSpec, now: Now, version: int) -> fe.Message:
        self._check(validation.check_name("application", name))
        self._check(validation.check_application_spec(spec))
        application = Application(name=name, spec=spec, creation_time=now.wall, version=version)
        self.ctl.commit(r.ApplicationSaved(time=now.wall, application=application))
        return fe.ApplicationReply(application=application)

    def register_default_application(self, name: str, spec: ApplicationSpec, now: Now) -> None:
        """At start: register a shipped application, or refresh it if its spec changed."""
        existing = self.ctl.state.applications.get(name)
        if existing is None or existing.spec != spec:
            version = existing.version + 1 if existing else 1
            self._save_application(name, spec, now, version)

    def _register_application(self, peer: bytes, request: fe.RegisterApplication, now: Now) -> fe.Message:
        if request.name in self.ctl.state.applications:
            raise RequestError(ErrorCode.AlreadyExists, f"application {request.name!r} already exists")
        return self._save_application(request.name, request.spec, now, 1)

    def _open_sessions_of(self, application: str) -> list[str]:
        return [
            s.id
            for s in self.ctl.state.sessions.values()
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
        self.ctl.commit(r.ApplicationRemoved(time=now.wall, name=request.name))
        return fe.Ok()

    def _get_application(self, peer: bytes, request: fe.GetApplication, now: Now) -> fe.Message:
        return fe.ApplicationReply(application=self._application(request.name))

    def _list_applications(self, peer: bytes, request: object, now: Now) -> fe.Message:
        return fe.ApplicationsReply(applications=sorted(self.ctl.state.applications.values(), key=lambda a: a.name))

    # ------------------------------------------------------------------ sessions

    def _resolve_spec(self, session_id: str, spec: SessionSpec) -> SessionSpec:
        self._check(validation.check_name("session", session_id))
        self._check(validation.check_session_spec(spec))
        if spec.common_data is not None and len(spec.common_data) > self.ctl.config.max_common_data_size:
            raise RequestError(
                ErrorCode.TooLarge,
                f"common data of session {session_id} is {len(spec.common_data)} bytes; the limit is "
                f"{self.ctl.config.max_common_data_size} (limits.max_common_data_size)",
            )
        application = self._application(spec.application)
        if application.state != "Enabled":
            raise RequestError(ErrorCode.InvalidState, f"application {spec.application!r} is disabled")
        return msgspec.structs.replace(spec, resreq=spec.resreq or self.ctl.config.default_resreq, batch_size=1)

    def _create_session(self, peer: bytes, request: fe.CreateSession, now: Now) -> fe.Message:
        if request.session_id in self.ctl.state.sessions:
            raise RequestError(ErrorCode.AlreadyExists, f"session {request.session_id!r} already exists")
        spec = self._resolve_spec(request.session_id, request.spec)
        if len(self.ctl.state.sessions) >= self.ctl.config.max_sessions:
            raise RequestError(
                ErrorCode.LimitExceeded,
                f"the session manager holds {self.ctl.config.max_sessions} sessions (limits.max_sessions); "
                "delete closed sessions first",
            )
        self.ctl.commit(r.SessionCreated(time=now.wall, session_id=request.session_id, spec=spec))
        self.ctl.dispatcher.session_changed(request.session_id)
        return fe.SessionReply(session=session_view(self.ctl.state.sessions[request.session_id]))

    def _open_session(self, peer: bytes, request: fe.OpenSession, now: Now) -> fe.Message:
        session = self.ctl.state.sessions.get(request.session_id)
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
        return fe.SessionsReply(sessions=[session_view(s) for s in self.ctl.state.sessions.values()])

    def _close_session(self, peer: bytes, request: fe.CloseSession, now: Now) -> fe.Message:
        session = self._session(request.session_id)
        if session.state is SessionState.Open:
            running = session.counts[TaskState.Running]
            if running:
                raise RequestError(
                    ErrorCode.InvalidState,
                    f"cannot close session {session.id} with {running} running tasks; wait for them to finish",
                )
            self.ctl.commit(r.SessionClosed(time=now.wall, session_id=session.id))
            self.ctl.dispatcher.session_changed(session.id)
        return fe.SessionReply(session=session_view(session))

    def _delete_session(self, peer: bytes, request: fe.DeleteSession, now: Now) -> fe.Message:
        session = self._session(request.session_id)
        if session.state is not SessionState.Closed:
            raise RequestError(ErrorCode.InvalidState, f"session {session.id} is open; close it before deleting it")
        view = session_view(session)
        self.ctl.commit(r.SessionDeleted(time=now.wall, session_id=session.id))
        return fe.SessionReply(session=view)

    # ------------------------------------------------------------------ tasks

    def _create_tasks(self, peer: bytes, request: fe.CreateTasks, now: Now) -> fe.Message:
        session = self._session(request.session_id)
        if request.key:
            if len(request.key) > MAX_KEY_LENGTH:
                raise RequestError(
                    ErrorCode.InvalidArgument, f"key is {len(request.key)} characters; at most {MAX_KEY_LENGTH}"
                )
            seen = session.batches.get(request.key)
            if seen is not None:
                return self._repeated(peer, request, session, seen, now)
        if session.state is not SessionState.Open:
            raise RequestError(ErrorCode.InvalidState, f"session {session.id} is closed; it takes no new tasks")
        if not request.inputs:
            raise RequestError(ErrorCode.InvalidArgument, "CreateTasks needs at least one input")
        if len(session.tasks) + len(request.inputs) > self.ctl.config.max_tasks_per_session:
            raise RequestError(
                ErrorCode.LimitExceeded,
                f"session {session.id} would exceed {self.ctl.config.max_tasks_per_session} tasks "
                "(limits.max_tasks_per_session)",
            )
        if self.ctl.tasks_held() + len(request.inputs) > self.ctl.config.max_tasks:
            raise RequestError(
                ErrorCode.LimitExceeded,
                f"the session manager would hold more than {self.ctl.config.max_tasks} tasks (limits.max_tasks); "
                "delete closed sessions first",
            )
        limit = self.ctl.config.max_task_input_size
        for index, data in enumerate(request.inputs):
            if data is not None and len(data) > limit:
                raise RequestError(
                    ErrorCode.TooLarge,
                    f"input {index} is {len(data)} bytes; the limit is {limit} (limits.max_task_input_size); "
                    "no task of this request was created",
                )
        if request.watch:
            self._check_watch_room(peer, request.request_id, len(request.inputs))
        first = len(session.tasks) + 1
        created = r.TasksCreated(
            time=now.wall, session_id=session.id, first_id=first, inputs=request.inputs, key=request.key
        )
        self.ctl.commit(created)
        self.ctl.counters["tasks_created"] += len(request.inputs)
        self.ctl.dispatcher.session_changed(session.id)
        task_ids = list(range(first, first + len(request.inputs)))
        if request.watch:
            self._watch_results(peer, request, session.id, task_ids, now)
        return fe.TasksCreated(session_id=session.id, task_ids=task_ids)

    def _repeated(
        self, peer: bytes, request: fe.CreateTasks, session: SessionEntry, seen: tuple[int, int], now: Now
    ) -> fe.Message:
        """A key seen before: the client did not get the first answer (a dropped connection)
        and sent the batch again. Nothing is created; the first answer is given again, in any
        session state, and with `watch` the results follow (those already terminal at once)."""
        first, count = seen
        if count != len(request.inputs):
            raise RequestError(
                ErrorCode.InvalidArgument,
                f"key {request.key!r} was used in session {session.id} for {count} tasks, not {len(request.inputs)}",
            )
        task_ids = list(range(first, first + count))
        self.ctl.counters["create_tasks_repeated"] += 1
        if request.watch:
            self._check_watch_room(peer, request.request_id, count)
            self._watch_results(peer, request, session.id, task_ids, now)
            self.ctl.state.touched.setdefault(session.id, set()).update(task_ids)  # the terminal ones now
        return fe.TasksCreated(session_id=session.id, task_ids=task_ids)

    def _watch_results(
        self, peer: bytes, request: fe.CreateTasks, session_id: str, task_ids: list[int], now: Now
    ) -> None:
        client = self.ctl.clients.client_of(peer)
        watch = Watch(peer, request.request_id, session_id, set(task_ids), True, terminal_only=True, client=client)
        self.ctl.watches.add_results(watch, self.ctl.state.sessions[session_id])

    def _check_watch_room(self, peer: bytes, request_id: int, ids: int) -> None:
        """Refuse a watch of `ids` task ids that would take its client or all clients past a
        limit (a watch it replaces, same peer and request id, makes room first)."""
        config, watches = self.ctl.config, self.ctl.watches
        client = self.ctl.clients.client_of(peer)
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
        """One page from task id `cursor`; `next_cursor` 0 when it is the last."""
        session = self._session(request.session_id)
        config = self.ctl.config
        size = request.page_size if 0 < request.page_size < config.max_page_tasks else config.max_page_tasks
        start, count = max(1, request.cursor), len(session.tasks)
        tasks_list, include_data = session.tasks, request.include_data

        def view(task_id: int) -> Task:
            return task_view(session.id, tasks_list[task_id - 1], include_data)

        tasks, _ = pages.page(range(start, count + 1), view, size, config.max_page_bytes)
        after = start + len(tasks)
        return fe.TasksReply(tasks=tasks, next_cursor=after if after <= count else 0)

    def _watch_tasks(self, peer: bytes, request: fe.WatchTasks, now: Now) -> fe.Message | None:
        session = self._session(request.session_id)
        remaining: set[int] | None = None
        if request.task_ids:
            limit = self.ctl.config.max_watch_task_ids
            if len(request.task_ids) > limit:
                raise RequestError(
                    ErrorCode.LimitExceeded,
                    f"WatchTasks names {len(request.task_ids)} tasks; at most {limit} (limits.max_watch_task_ids); "
                    "send several, or watch the whole session",
                )
            remaining = set(request.task_ids)
            unknown = [t for t in remaining if session.task(t) is None]
            if unknown:
                raise RequestError(
                    ErrorCode.NotFound, f"tasks {sorted(unknown)[:10]} not found in session {session.id}"
                )
        self._check_watch_room(peer, request.request_id, len(remaining or ()))
        client = self.ctl.clients.client_of(peer)
        watch = Watch(peer, request.request_id, session.id, remaining, request.include_data, client=client)
        self.ctl.watches.add(watch, session)
        return None  # the first TaskUpdates push is the reply
