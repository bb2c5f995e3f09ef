"""The agent API, flamepy's `flamepy.service`: a `Session` whose requests, responses and shared
context are Python objects, and the `FlameInstance` that serves it.

    # client                                        # service (the application's command)
    with Session("agent", ctx=Memory()) as s:        instance = FlameInstance()
        reply = s.invoke(Question("hi"))
        memory = s.context()                         @instance.entrypoint
                                                     def answer(q: Question) -> Reply:
                                                         memory = instance.context()
                                                         instance.update_context(memory.add(q))
                                                         return Reply(...)

                                                     if __name__ == "__main__":
                                                         instance.run()

Requests and replies travel as cloudpickle bytes in task input and output. The context lives in
the object cache (`put_object` under `<application>/<session id>`); the session's common data is
its encoded `ObjectRef`, so every instance of the session reads the same context, and
`update_context` writes a new version that the client's `context()` and the other instances see
at their next read. The objects of the session go when the session is deleted.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import cloudpickle  # type: ignore[import-untyped]  # no stubs; dumps/loads are all we use

from flamed.client import create_session, open_session
from flamed.client.cache import ObjectRef, get_object, put_object, update_object
from flamed.client.connection import short_name
from flamed.client.errors import FlameError
from flamed.client.session import Session as CoreSession
from flamed.client.types import ResourceRequirement
from flamed.service.types import FlameService, SessionContext, TaskContext
from protocol.resources import parse_size

log = logging.getLogger("flamed.service")

F = TypeVar("F", bound=Callable[..., Any])


def _resreq(value: ResourceRequirement | dict[str, Any] | None) -> ResourceRequirement | None:
    """flamepy takes a dict such as {"cpu": 16, "memory": "64g", "gpu": 4} too."""
    if not isinstance(value, dict):
        return value
    memory = value.get("memory", value.get("mem"))
    fields: dict[str, int] = {}
    if "cpu" in value:
        fields["cpu"] = int(value["cpu"])
    if "gpu" in value:
        fields["gpu"] = int(value["gpu"])
    if memory is not None:
        fields["memory"] = parse_size(memory) if isinstance(memory, str) else int(memory)
    return ResourceRequirement(**fields)


class Session:
    """A session of application `name` whose shared context is `ctx` (any picklable object),
    or, with `session_id`, an existing open session. Exactly one of the two."""

    def __init__(
        self,
        name: str | None = None,
        ctx: Any = None,
        session_id: str | None = None,
        resreq: ResourceRequirement | dict[str, Any] | None = None,
    ) -> None:
        if name is None and session_id is None:
            raise ValueError("Either 'name' or 'session_id' must be provided")
        if name is not None and session_id is not None:
            raise ValueError("Cannot provide both 'name' and 'session_id'. They are mutually exclusive.")
        self._session: CoreSession | None
        if session_id is not None:
            self._session = open_session(session_id)
            self._name = self._session.application
            return
        assert name is not None
        self._name = name
        common_data = None
        new_id = None
        if ctx is not None:
            new_id = short_name(name)
            common_data = put_object(f"{name}/{new_id}", ctx).encode()
        self._session = create_session(name, common_data, new_id, resreq=_resreq(resreq))

    def id(self) -> str | None:
        return self._session.id if self._session is not None else None

    def invoke(self, req: Any) -> Any:
        """Run one task with `req` and return what the entrypoint returned (its exception, as a
        FlameError, if it raised)."""
        if self._session is None:
            raise RuntimeError("Service session is not initialized")
        output = self._session.invoke(cloudpickle.dumps(req))
        return None if output is None else cloudpickle.loads(output)

    def context(self) -> Any:
        """The session's context at its latest version (None if it has none)."""
        if self._session is None:
            return None
        data = self._session.common_data()
        return None if data is None else get_object(ObjectRef.decode(data))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FlameInstance(FlameService):
    """A service made of one function: `@instance.entrypoint` on it, `instance.run()` to serve."""

    def __init__(self) -> None:
        self._entrypoint: Callable[..., Any] | None = None
        self._takes_request = False
        self._object_ref: ObjectRef | None = None
        self._raw_context: bytes | None = None

    def entrypoint(self, func: F) -> F:
        """Register `func` (zero or one positional parameter, sync or async) as the handler."""
        parameters = list(inspect.signature(func).parameters.values())
        if len(parameters) > 1:
            raise ValueError("Entrypoint must have exactly zero or one parameter")
        if parameters and parameters[0].kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
            raise ValueError("Parameter must be positional or keyword")
        self._entrypoint = func
        self._takes_request = bool(parameters)
        return func

    def context(self) -> Any:
        """The session's context at its latest version (None without one)."""
        if self._object_ref is None:
            return self._raw_context
        return get_object(self._object_ref)

    def update_context(self, data: Any) -> None:
        """Write a new version of the session's context (seen by the client and every instance)."""
        if self._object_ref is not None:
            self._object_ref = update_object(self._object_ref, data)

    def on_session_enter(self, context: SessionContext) -> None:
        data = context.common_data()
        self._object_ref, self._raw_context = None, None
        if data is not None:
            try:
                self._object_ref = ObjectRef.decode(data)
            except FlameError:  # common data given as plain bytes (the core API): hand it over
                self._raw_context = data

    def on_task_invoke(self, context: TaskContext) -> bytes | None:
        if self._entrypoint is None:
            log.warning("no entrypoint registered (use @instance.entrypoint)")
            return None
        request = cloudpickle.loads(context.input) if context.input is not None else None
        args = (request,) if self._takes_request else ()
        if inspect.iscoroutinefunction(self._entrypoint):
            result = asyncio.run(self._entrypoint(*args))
        else:
            result = self._entrypoint(*args)
        return None if result is None else bytes(cloudpickle.dumps(result))

    def on_session_leave(self) -> None:
        self._object_ref, self._raw_context = None, None

    def run(self) -> None:
        """Serve tasks until the executor manager ends the session (it starts this process)."""
        if not os.environ.get("FLAME_INSTANCE_ENDPOINT"):
            raise RuntimeError(
                "FLAME_INSTANCE_ENDPOINT is not set: an agent instance is started by an executor manager "
                "(register the script as an application and open a Session); flamepy's local debug server "
                "is not part of flamed"
            )
        from flamed.service.runner import run

        run(self)
