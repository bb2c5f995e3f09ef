"""flamepy.runner's data types: `SessionContext` (a custom session id for a service),
`RunnerContext` (what a service's session shares: the execution object and its scaling), and
`RunnerRequest` (one call: method, args, kwargs). Names, defaults and errors are flamepy's."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

#: Longest custom session id flamepy accepts.
MAX_SESSION_ID = 128


@dataclass
class SessionContext:
    """Attach as `_session_context` to a function, class or instance to choose the session id
    `Runner.service` opens (several Runners, or a task, then share one session)."""

    session_id: str | None = None
    application_name: str | None = None

    def __post_init__(self) -> None:
        if self.session_id is not None:
            if not isinstance(self.session_id, str):
                raise ValueError(f"session_id must be a string, got {type(self.session_id)}")
            if len(self.session_id) == 0:
                raise ValueError("session_id cannot be empty string")
            if len(self.session_id) > MAX_SESSION_ID:
                raise ValueError(f"session_id too long ({len(self.session_id)} chars, max {MAX_SESSION_ID})")
        if self.application_name is not None and not isinstance(self.application_name, str):
            raise ValueError(f"application_name must be a string, got {type(self.application_name)}")


@dataclass
class RunnerContext:
    """The execution object of a service's session and how it scales.

    Instances are stateful and fixed (warmup 0 or 1); functions and classes are stateless and
    autoscale unless `autoscale=False`. min/max instances follow: autoscale -> (warmup, None);
    fixed -> (warmup or 1, the same)."""

    execution_object: Any
    stateful: bool | None = None
    autoscale: bool | None = None
    warmup: int = 0
    #: Small results come back in the task's output itself (flamed.runner's services ask for
    #: it); False, as flamepy: the output is always the encoded ObjectRef of the result.
    inline_results: bool = False
    min_instances: int = field(init=False, repr=False)
    max_instances: int | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise ValueError("warmup must be a non-negative integer.")
        is_class = inspect.isclass(self.execution_object)
        is_function = callable(self.execution_object) and not is_class
        if not is_function and not is_class:
            if self.stateful is False:
                raise ValueError("Object instance services are always stateful. Omit stateful or pass stateful=True.")
            if self.autoscale is True:
                raise ValueError("Object instance services are always fixed. Omit autoscale or pass autoscale=False.")
            if self.warmup not in (0, 1):
                raise ValueError("Object instance services only support warmup=0 or warmup=1.")
            self.stateful = True
            self.autoscale = False
        else:
            if self.stateful is True:
                raise ValueError(
                    "Functions, builtins, and classes are always stateless. Omit stateful or pass stateful=False."
                )
            self.stateful = False
            self.autoscale = True if self.autoscale is None else self.autoscale
        default_min = 0 if self.autoscale else 1
        self.min_instances = self.warmup if self.warmup > 0 else default_min
        self.max_instances = None if self.autoscale else self.min_instances


@dataclass
class RunnerRequest:
    """One call: `method` (None calls the execution object itself), `args`, `kwargs`; an
    `ObjectRef` among them is fetched on the executor before the call."""

    method: str | None = None
    args: tuple[Any, ...] | list[Any] | None = None
    kwargs: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.method is not None and not isinstance(self.method, str):
            raise ValueError(f"method must be a string or None, got {type(self.method)}")
        if self.args is not None and not isinstance(self.args, tuple | list):
            raise ValueError(f"args must be a tuple or list, got {type(self.args)}")
        if self.kwargs is not None and not isinstance(self.kwargs, dict):
            raise ValueError(f"kwargs must be a dict, got {type(self.kwargs)}")
