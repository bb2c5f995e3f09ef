"""flamepy.runner's `get_data`: what a Runner task's input or output holds, with its ObjectRefs
resolved (for tools that show a session's tasks)."""

from __future__ import annotations

import contextlib
import enum
from typing import Any

import cloudpickle  # type: ignore[import-untyped]  # no stubs

from flamed.client import ObjectRef, get_object
from flamed.runner.types import RunnerRequest
from protocol.errors import FlameBaseError

#: How deep nested ObjectRefs are resolved.
MAX_DEPTH = 10


class ErrorType(enum.Enum):
    DECODE_ERROR = "decode_error"
    CACHE_RETRIEVAL_ERROR = "cache_retrieval_error"
    DATA_FORMAT_ERROR = "data_format_error"


class RunnerError(FlameBaseError):
    """A `get_data` failure; `error_type` says which kind."""

    def __init__(
        self,
        error_type: ErrorType,
        message: str,
        cause: BaseException | None = None,
        key: str | None = None,
        data_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.cause = cause
        self.key = key
        self.data_type = data_type

    def __str__(self) -> str:
        return f"[{self.error_type.value}] {super().__str__()}"


def _is_pickle(data: bytes) -> bool:
    return len(data) >= 2 and data[0] == 0x80 and data[1] in (2, 3, 4, 5)


def get_data(data: bytes) -> dict[str, Any]:
    """`{"type": "input", "method", "args", "kwargs", "metadata"}` for a task input (a pickled
    RunnerRequest), `{"type": "output", "result", "metadata"}` for an output (an ObjectRef)."""
    ref: ObjectRef | None = None
    value: Any = None
    if _is_pickle(data):
        try:
            value = cloudpickle.loads(data)
        except Exception:
            value = None
    if value is None:
        try:
            ref = ObjectRef.decode(data)
        except Exception as exc:
            raise RunnerError(
                ErrorType.DECODE_ERROR, f"Failed to decode data: not valid ObjectRef or pickled data: {exc}", cause=exc
            ) from None
        try:
            value = get_object(ref)
        except Exception as exc:
            raise RunnerError(
                ErrorType.CACHE_RETRIEVAL_ERROR, f"Failed to retrieve object from cache: {exc}", cause=exc, key=ref.key
            ) from None
        if isinstance(value, bytes):
            with contextlib.suppress(Exception):
                value = cloudpickle.loads(value)
    metadata = {"object_ref_key": ref.key} if ref is not None else {}
    if isinstance(value, RunnerRequest):
        return {
            "type": "input",
            "method": value.method,
            "args": None if value.args is None else tuple(_resolve(a) for a in value.args),
            "kwargs": None if value.kwargs is None else {k: _resolve(v) for k, v in value.kwargs.items()},
            "metadata": metadata,
        }
    return {"type": "output", "result": value, "metadata": metadata}


def _resolve(value: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        return value
    if isinstance(value, ObjectRef):
        try:
            return get_object(value)
        except Exception as exc:
            raise RunnerError(
                ErrorType.CACHE_RETRIEVAL_ERROR, f"Failed to resolve ObjectRef: {exc}", cause=exc, key=value.key
            ) from None
    if isinstance(value, list):
        return [_resolve(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, depth + 1) for k, v in value.items()}
    return value
