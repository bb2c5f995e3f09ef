"""The executor side of the Runner (flamepy's `flamepy.runner.runpy`), served by the built-in
application `flmrun` (`python -m flamed.apps.flmrun`).

On session enter it loads the `RunnerContext` that the session's common data names (an encoded
ObjectRef) and instantiates a class. Each task is a cloudpickled `RunnerRequest`: ObjectRef
arguments (top level and inside lists, tuples, dicts) are fetched from the cache, the call is
made, and the task's output is the result put in the cache under `<app>/<session>`, as its
encoded ObjectRef (flamepy's contract), or, when the RunnerContext asks for it
(`inline_results`, as flamed.runner's services do), the pickled result itself if it is small
(`MAX_INLINE_RESULT`): a new cache object costs two fsyncs, a small result rides on the
task's own durable record. A stateful (instance) service reloads its object before each call
and writes it back after. A call that raises fails the task with the exception's type and
text and the remote traceback, so the caller sees where it failed.
"""

from __future__ import annotations

import inspect
import logging
import os
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cloudpickle  # type: ignore[import-untyped]  # no stubs

from flamed.client import ObjectRef, get_object, put_object, update_object
from flamed.runner.types import RunnerContext, RunnerRequest
from flamed.service import FlameService, SessionContext, TaskContext, run
from protocol.errors import FlameBaseError

log = logging.getLogger("flamed.runner")

#: Arguments fetched from the cache at once.
MAX_PARALLEL_RESOLVE = 8
#: How deep ObjectRefs are looked for inside list, tuple and dict arguments.
MAX_NESTING = 4
#: Largest result (pickled bytes) returned in the task's output instead of the object cache.
MAX_INLINE_RESULT = 64 * 1024
#: Characters of a remote traceback kept in a task's failure (the session manager keeps it).
MAX_TRACEBACK = 8000


class RemoteError(FlameBaseError):
    """Raised in place of a call's exception: its text carries the remote traceback."""


def remote_error(exc: BaseException) -> Exception:
    """An exception named like `exc` whose text is `exc`'s text and its remote traceback (the
    instance reports a failure as `<type name>: <text>`)."""
    trace = "".join(traceback.format_exception(exc)).rstrip()
    if len(trace) > MAX_TRACEBACK:  # a deep recursion: its start and where it ended
        head, tail = trace[: MAX_TRACEBACK // 4], trace[MAX_TRACEBACK // 4 - MAX_TRACEBACK :]
        trace = f"{head}\n  ... {len(trace) - MAX_TRACEBACK} characters left out ...\n{tail}"
    error_type: type[RemoteError] = type(type(exc).__name__, (RemoteError,), {"__module__": type(exc).__module__})
    return error_type(f"{exc}\n\nRemote {trace}")


def encode_result(result: Any, key_prefix: str, inline: bool) -> bytes:
    """A task's output: with `inline`, a small result itself (a cloudpickle, which the session
    manager keeps with the task: one durable write it makes anyway); else, or when large, the
    encoded ObjectRef of the object put in the cache under `key_prefix`."""
    if inline:
        data: bytes = cloudpickle.dumps(result, protocol=cloudpickle.DEFAULT_PROTOCOL)
        if len(data) <= MAX_INLINE_RESULT:
            return data
    return put_object(key_prefix, result).encode()


def is_inline(output: bytes) -> bool:
    """A pickle (PROTO opcode 0x80, protocol 2 to 5), not an encoded ObjectRef (a msgpack map:
    0x83 for its three fields)."""
    return len(output) >= 2 and output[0] == 0x80 and output[1] in (2, 3, 4, 5)


class Inline:
    """A small result given as an argument (an ObjectFuture whose result came in its task's
    output): its pickle, loaded on the executor."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _refs_in(value: Any, found: list[Any], depth: int = 0) -> None:
    """ObjectRefs and Inlines in `value`, inside plain lists, tuples and dicts too."""
    if isinstance(value, ObjectRef | Inline):
        found.append(value)
    elif depth < MAX_NESTING and type(value) in (list, tuple):
        for item in value:
            _refs_in(item, found, depth + 1)
    elif depth < MAX_NESTING and type(value) is dict:
        for item in value.values():
            _refs_in(item, found, depth + 1)


def _replace(value: Any, resolved: dict[int, Any], depth: int = 0) -> Any:
    if isinstance(value, ObjectRef | Inline):
        return resolved[id(value)]
    if depth < MAX_NESTING and type(value) in (list, tuple):
        return type(value)(_replace(v, resolved, depth + 1) for v in value)
    if depth < MAX_NESTING and type(value) is dict:
        return {k: _replace(v, resolved, depth + 1) for k, v in value.items()}
    return value


def _load(value: ObjectRef | Inline) -> Any:
    return cloudpickle.loads(value.data) if isinstance(value, Inline) else get_object(value)


def resolve_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Fetch every ObjectRef among the arguments (in parallel when there are several) and
    load every Inline."""
    found: list[Any] = []
    _refs_in(args, found)
    _refs_in(kwargs, found)
    if not found:
        return args, kwargs
    refs = [v for v in found if isinstance(v, ObjectRef)]
    if len(refs) <= 1:
        values = [_load(v) for v in found]
    else:
        with ThreadPoolExecutor(max_workers=min(len(refs), MAX_PARALLEL_RESOLVE)) as pool:
            values = list(pool.map(_load, found))
    resolved = {id(ref): value for ref, value in zip(found, values, strict=True)}
    return _replace(args, resolved), _replace(kwargs, resolved)


class FlameRunpyService(FlameService):
    """Runs the calls of one Runner service's session."""

    def __init__(self) -> None:
        self._ssn_ctx: SessionContext | None = None
        self._execution_object: Any = None
        self._runner_context: RunnerContext | None = None

    def _context_ref(self) -> ObjectRef:
        assert self._ssn_ctx is not None
        data = self._ssn_ctx.common_data()
        if data is None:
            raise ValueError("Common data is None in session context")
        return ObjectRef.decode(data)

    def _load(self) -> None:
        serialized = get_object(self._context_ref())
        context = cloudpickle.loads(serialized) if isinstance(serialized, bytes | bytearray) else serialized
        if not isinstance(context, RunnerContext):
            raise ValueError(f"Expected RunnerContext in common_data, got {type(context)}")
        obj = context.execution_object
        if obj is None:
            raise ValueError("Execution object is None in RunnerContext")
        if inspect.isclass(obj):
            obj = obj()
        self._runner_context, self._execution_object = context, obj

    def on_session_enter(self, context: SessionContext) -> None:
        self._ssn_ctx = context
        self._load()

    def on_task_invoke(self, context: TaskContext) -> bytes | None:
        assert self._ssn_ctx is not None and self._runner_context is not None
        if context.input is None:
            raise ValueError("Task input is None")
        request = cloudpickle.loads(context.input)
        if not isinstance(request, RunnerRequest):
            raise ValueError(f"Expected RunnerRequest in task input, got {type(request)}")
        RunnerRequest.__post_init__(request)
        stateful = bool(self._runner_context.stateful)
        if stateful:
            self._load()
        args, kwargs = resolve_arguments(tuple(request.args or ()), dict(request.kwargs or {}))
        target = self._execution_object
        if request.method is not None:
            if not hasattr(target, request.method):
                raise ValueError(f"Execution object has no method '{request.method}'")
            target = getattr(target, request.method)
        if not callable(target):
            raise ValueError(f"Execution object is not callable: {type(target)}")
        try:
            result = target(*args, **kwargs)
        except Exception as exc:
            raise remote_error(exc) from exc
        if stateful:
            updated = RunnerContext(
                execution_object=self._execution_object,
                stateful=True,
                autoscale=self._runner_context.autoscale,
                warmup=self._runner_context.warmup,
                inline_results=bool(getattr(self._runner_context, "inline_results", False)),
            )
            update_object(self._context_ref(), cloudpickle.dumps(updated, protocol=cloudpickle.DEFAULT_PROTOCOL))
            self._runner_context = updated
        prefix = f"{self._ssn_ctx.application.name}/{self._ssn_ctx.session_id}"
        return encode_result(result, prefix, bool(getattr(self._runner_context, "inline_results", False)))

    def on_session_leave(self) -> None:
        self._ssn_ctx = None


def main() -> None:
    level = os.environ.get("FLAME_LOG", "warning").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING))
    run(FlameRunpyService())


if __name__ == "__main__":
    main()
