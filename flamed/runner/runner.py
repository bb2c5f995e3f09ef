"""flamepy's Runner: package the working directory, register it as an application cloned from
the `flmrun` template, and turn functions, classes and instances into services whose calls
return `ObjectFuture`s.

    with Runner("my-app") as rr:
        square = rr.service(lambda x: x * x)
        total = rr.service(sum)
        print(total([square(i) for i in range(10)]).get())   # futures as arguments: chaining

A call cloudpickles a `RunnerRequest` into a task of the service's session; the executor
(flamed/runner/runpy.py) fetches `ObjectRef` arguments from the object cache, calls, and puts
the result in the cache; the task's output is the result's `ObjectRef`. So results and
chained arguments travel executor -> cache -> executor, never through the client. A remote
exception fails the task with its type, text and remote traceback, raised by `get()`/`wait()`
as a `FlameError`.

Close (or leaving the `with`) closes the services' sessions, unregisters the application,
deletes its objects (results included) and its package. The session manager refuses to close
a session while tasks run (tasks queued at an executor count as running), so close waits for
the calls in flight, up to `FLAME_RUNNER_CLOSE_TIMEOUT` seconds (60) per session, and leaves
everything in place (logged; close again) if calls still run then (`Runner.close`). A Runner
that found the application registered already (another Runner, or a Runner inside a task)
leaves all of that to the one that registered it.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, as_completed
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]  # no stubs

from flamed.client import (
    ApplicationAttributes,
    FlameContext,
    FlameError,
    FlameErrorCode,
    ObjectRef,
    ResourceRequirement,
    Session,
    SessionAttributes,
    SessionState,
    delete_objects,
    get_application,
    get_object,
    list_sessions,
    open_session,
    put_object,
    register_application,
    short_name,
    unregister_application,
)
from flamed.client.futures import before_wait
from flamed.runner import package
from flamed.runner.runpy import Inline as _Inline
from flamed.runner.runpy import is_inline
from flamed.runner.types import RunnerContext, RunnerRequest, SessionContext

log = logging.getLogger("flamed.runner")

#: How deep ObjectFutures are looked for inside list, tuple and dict arguments.
MAX_NESTING = 4
#: Seconds `Runner.close` waits for running calls before it gives up on a session.
CLOSE_TIMEOUT = float(os.environ.get("FLAME_RUNNER_CLOSE_TIMEOUT", "60"))


def _output(future: Future[Any]) -> bytes:
    result = future.result()
    if isinstance(result, ObjectRef):
        return result.encode()
    if not isinstance(result, bytes | bytearray):
        raise FlameError(FlameErrorCode.INTERNAL, f"a Runner task returned {type(result).__name__}, not its result")
    return bytes(result)


class ObjectFuture:
    """The result of a remote call: `ref()` its ObjectRef, `get()` the object, `wait()`.

    A small result comes in the task's output itself (runpy.py); `ref()` then puts it in the
    cache (under the service's `<app>/<session>`) the first time it is asked for."""

    def __init__(self, future: Future[Any], key_prefix: str | None = None) -> None:
        self._future = future
        self._key_prefix = key_prefix
        self._ref: ObjectRef | None = None

    def ref(self) -> ObjectRef:
        if self._ref is None:
            output = _output(self._future)
            if is_inline(output):
                if self._key_prefix is None:
                    raise FlameError(FlameErrorCode.INVALID_STATE, "this ObjectFuture's result has no cache key")
                self._ref = put_object(self._key_prefix, cloudpickle.loads(output))
            else:
                self._ref = ObjectRef.decode(output)
        return self._ref

    def get(self) -> Any:
        output = _output(self._future)
        if is_inline(output) and self._ref is None:
            return cloudpickle.loads(output)
        return get_object(self.ref())

    def _argument(self) -> Any:
        """What travels in a call that takes this future: a small result itself, else its ref
        (the executor fetches the object)."""
        output = _output(self._future)
        if is_inline(output) and self._ref is None:
            return _Inline(output)
        return self.ref()

    def wait(self) -> None:
        self._future.result()

    def done(self) -> bool:
        return self._future.done()


class ObjectFutureIterator:
    """Yields the ObjectFutures given to it as they complete."""

    def __init__(self, futures: list[ObjectFuture]) -> None:
        self._future_map = {future._future: future for future in futures}

    def __iter__(self) -> Iterator[ObjectFuture]:
        before_wait(self._future_map)
        for future in as_completed(self._future_map):
            yield self._future_map[future]


def _as_ref(value: Any, depth: int = 0) -> Any:
    """An ObjectFuture becomes its ObjectRef (fetched on the executor), inside lists, tuples and
    dicts too (fan-in: `total([square(i) for i in ...])`)."""
    if isinstance(value, ObjectFuture):
        return value._argument()
    if depth < MAX_NESTING:
        if type(value) in (list, tuple) and any(_has_future(v) for v in value):
            return type(value)(_as_ref(v, depth + 1) for v in value)
        if type(value) is dict and any(_has_future(v) for v in value.values()):
            return {k: _as_ref(v, depth + 1) for k, v in value.items()}
    return value


def _has_future(value: Any) -> bool:
    return isinstance(value, ObjectFuture | list | tuple | dict)


class RunnerService:
    """An execution object served by one session of the Runner's application: call it (a
    function) or its public methods (a class or instance); each call returns an ObjectFuture."""

    def __init__(
        self,
        app: str,
        execution_object: Any,
        autoscale: bool | None = None,
        warmup: int = 0,
        resreq: ResourceRequirement | None = None,
    ) -> None:
        self._app = app
        self._execution_object = execution_object
        self._function_wrapper: Callable[..., ObjectFuture] | None = None
        custom_session_id = None
        ctx = getattr(execution_object, "_session_context", None)
        if ctx is not None:
            if isinstance(ctx, SessionContext):
                custom_session_id = ctx.session_id
            else:
                log.warning("_session_context is a %s, not a SessionContext: ignored", type(ctx).__name__)
        session_id = custom_session_id or short_name(app)
        runner_context = RunnerContext(
            execution_object=execution_object, autoscale=autoscale, warmup=warmup, inline_results=True
        )
        self._runner_context = runner_context
        serialized = cloudpickle.dumps(runner_context, protocol=cloudpickle.DEFAULT_PROTOCOL)
        ref = put_object(f"{app}/{session_id}", serialized)
        spec = SessionAttributes(
            application=app,
            id=session_id,
            common_data=ref.encode(),
            min_instances=runner_context.min_instances,
            max_instances=runner_context.max_instances,
            batch_size=1,
            resreq=resreq,
        )
        self._session: Session = open_session(session_id, spec)
        self._key_prefix = f"{app}/{session_id}"
        if callable(execution_object) and not inspect.isclass(execution_object):
            self._function_wrapper = self._wrapper(None)
        else:
            self._create_method_wrappers()

    def _create_method_wrappers(self) -> None:
        for name in dir(self._execution_object):
            if name.startswith("_") or not callable(getattr(self._execution_object, name, None)):
                continue
            if hasattr(type(self), name) or name in self.__dict__:
                log.warning("method %r is not wrapped: RunnerService has an attribute of that name", name)
                continue
            setattr(self, name, self._wrapper(name))

    def _wrapper(self, method: str | None) -> Callable[..., ObjectFuture]:
        def call(*args: Any, **kwargs: Any) -> ObjectFuture:
            request = RunnerRequest(
                method=method,
                args=tuple(_as_ref(a) for a in args) or None,
                kwargs={k: _as_ref(v) for k, v in kwargs.items()} or None,
            )
            data = cloudpickle.dumps(request, protocol=cloudpickle.DEFAULT_PROTOCOL)
            return ObjectFuture(self._session.run(data), self._key_prefix)

        call.__name__ = str(method or getattr(self._execution_object, "__name__", "call"))
        return call

    def __call__(self, *args: Any, **kwargs: Any) -> ObjectFuture:
        if self._function_wrapper is None:
            raise TypeError(
                f"RunnerService for app '{self._app}' is not callable. The execution object is a class or "
                "instance, not a function. Call specific methods instead."
            )
        return self._function_wrapper(*args, **kwargs)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close the session once no task runs (the session manager refuses before), waiting
        up to `timeout` seconds; pending tasks are then cancelled."""
        self.close_session(self._session, timeout)

    @staticmethod
    def close_session(session: Session, timeout: float = CLOSE_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                session.close()
                return
            except FlameError as exc:
                if exc.code is not FlameErrorCode.INVALID_STATE or time.monotonic() >= deadline:
                    raise
            time.sleep(0.05)  # the session manager pushes no "last task finished" event to wait on


class Runner:
    """Package the working directory as application `name` (from the `flmrun` template) and
    serve Python objects from it; a context manager, started at construction."""

    def __init__(
        self,
        name: str,
        fail_if_exists: bool = False,
        dependencies: list[str] | None = None,
        python_version: str | None = None,
    ) -> None:
        self._name = name
        self._services: list[RunnerService] = []
        self._package_path: str | None = None
        self._package_url: str | None = None  # where the package is stored
        self._app_registered = False
        self._context = FlameContext()
        self._started = False
        self._fail_if_exists = fail_if_exists
        self._dependencies = dependencies
        self._python_version = python_version
        self._start()

    @property
    def name(self) -> str:
        return self._name

    def _start(self) -> None:
        if self._started:
            return
        if get_application(self._name) is not None:
            if self._fail_if_exists:
                raise FlameError(
                    FlameErrorCode.ALREADY_EXISTS,
                    f"Application '{self._name}' already exists. Set fail_if_exists=False to skip registration.",
                )
            log.debug("application %s exists: reused, left to its owner", self._name)
            self._started = True
            return
        config = self._context.package
        storage = config.storage if config is not None else None
        if storage is None and self._context.cache is None:
            raise FlameError(
                FlameErrorCode.INVALID_CONFIG,
                "Storage not configured: the cluster names no object cache; set FLAME_PACKAGE_STORAGE=file:///dir",
            )
        template_name = self._context.runner_template
        template = get_application(template_name)
        if template is None:
            raise FlameError(
                FlameErrorCode.INTERNAL, f"Failed to get application template '{template_name}': not registered"
            )
        archive = package.build(
            self._name, Path.cwd(), self._dependencies, list(config.excludes) if config is not None else []
        )
        self._package_path = str(archive)
        try:
            self._package_url = package.upload(self._name, archive, storage)
            environments = dict(template.environments)
            if self._python_version:
                environments["FLAME_PYTHON_VERSION"] = self._python_version
            working_directory = f"{template.working_directory}/{self._name}" if template.working_directory else None
            register_application(
                self._name,
                ApplicationAttributes(
                    image=template.image,
                    command=template.command,
                    description=f"Runner application: {self._name}",
                    labels=list(template.labels),
                    arguments=list(template.arguments),
                    environments=environments,
                    working_directory=working_directory,
                    max_instances=template.max_instances,
                    delay_release=template.delay_release,
                    schema=template.schema,
                    url=self._package_url,
                    installer=template.installer,
                ),
            )
        except BaseException:
            self._remove_package()
            raise
        self._app_registered = True
        self._started = True

    def __enter__(self) -> Runner:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close the services' sessions, unregister the application, delete its objects and
        package: only if this Runner registered it. Safe to call again.

        Calls in flight are waited for: the session manager does not close a session while a
        task of it runs (a task already handed to an executor counts as running), so each
        service's close waits up to `timeout` seconds (`FLAME_RUNNER_CLOSE_TIMEOUT`, 60 by
        default); calls not started by then are cancelled, and their futures raise
        `FlameError(INVALID_STATE, "... was cancelled (the session was closed)")`. If calls
        still run after `timeout`, close logs it and stops there: the sessions of those
        services, the application, its objects and package stay (the running calls finish
        and their futures complete), and `close()` may be called again. (flamepy tries once
        and logs the session manager's refusal.)"""
        if not self._started:
            return
        if not self._app_registered:
            self._started = False
            return
        still_running = []
        for service in self._services:
            try:
                service.close(timeout)
            except FlameError as exc:
                log.error("Runner %s: closing session %s failed: %s", self._name, service._session.id, exc)
                if exc.code is FlameErrorCode.INVALID_STATE:  # calls still run
                    still_running.append(service)
        self._services = still_running
        if still_running:
            log.error(
                "Runner %s: calls still run after %gs; the application stays registered (call close() again)",
                self._name,
                timeout,
            )
            return
        self._started = False
        self._close_other_sessions()
        try:
            unregister_application(self._name)
            self._app_registered = False
        except FlameError as exc:
            log.error("Runner %s: unregistering the application failed: %s", self._name, exc)
        try:
            delete_objects(f"{self._name}/*")
        except FlameError as exc:
            log.error("Runner %s: deleting its cached objects failed: %s", self._name, exc)
        self._remove_package()

    def _close_other_sessions(self) -> None:
        """Sessions of the application opened by other Runners (one that found it registered,
        or one inside a task): the application goes, so they go too."""
        try:
            sessions = [s for s in list_sessions() if s.application == self._name and s.state is SessionState.Open]
        except FlameError as exc:
            log.error("Runner %s: listing its sessions failed: %s", self._name, exc)
            return
        for session in sessions:
            try:
                RunnerService.close_session(session)
            except FlameError as exc:
                log.error("Runner %s: closing session %s failed: %s", self._name, session.id, exc)

    def _remove_package(self) -> None:
        try:
            package.remove(self._package_url)
        except (FlameError, OSError) as exc:
            log.error("Runner %s: removing its package failed: %s", self._name, exc)
        if self._package_path:
            shutil.rmtree(os.path.dirname(self._package_path), ignore_errors=True)
        self._package_path = None
        self._package_url = None

    def service(
        self,
        execution_object: Any,
        autoscale: bool | None = None,
        warmup: int = 0,
        resreq: ResourceRequirement | None = None,
    ) -> RunnerService:
        """Serve `execution_object` (a function, class or instance) from a session of its own."""
        service = RunnerService(self._name, execution_object, autoscale=autoscale, warmup=warmup, resreq=resreq)
        self._services.append(service)
        return service

    def get(self, futures: list[ObjectFuture]) -> list[Any]:
        return [future.get() for future in futures]

    def ref(self, futures: list[ObjectFuture]) -> list[ObjectRef]:
        return [future.ref() for future in futures]

    def wait(self, futures: list[ObjectFuture]) -> None:
        for future in futures:
            future.wait()

    def select(self, futures: list[ObjectFuture]) -> ObjectFutureIterator:
        return ObjectFutureIterator(futures)

    def put_object(self, obj: Any) -> ObjectRef:
        """Put `obj` in the cache under `<name>/shared` (deleted with the Runner)."""
        return put_object(f"{self._name}/shared", obj)
