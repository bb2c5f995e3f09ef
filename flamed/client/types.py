"""The SDK's data types, with flamepy's names.

State enums keep Flame's spelling as values ("Succeed") and also answer to flamepy's upper-case
member names (`TaskState.SUCCEED`) and numbers (`int(TaskState.FAILED) == 3`, `TaskState(3)`:
flamepy's are IntEnums, and task event codes are these numbers), so a flamepy script needs only
its imports changed while `TaskState.Failed == "Failed"` still holds. Times
are timezone-aware UTC datetimes, as flamepy gives them. Wire structs from `protocol.types`
are converted here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any

from protocol import types as wire
from protocol.types import Event, ResourceRequirement

__all__ = [
    "Application",
    "ApplicationAttributes",
    "ApplicationSchema",
    "ApplicationState",
    "Event",
    "ResourceRequirement",
    "SessionAttributes",
    "SessionState",
    "Shim",
    "Task",
    "TaskState",
]


class _Numbered(enum.StrEnum):
    """A StrEnum that converts to flamepy's number of the member and is built from it."""

    @classmethod
    def _numbers(cls) -> dict[str, int]:
        return {value: number for number, value in enumerate(dict.fromkeys(m.value for m in cls))}

    def __int__(self) -> int:
        return self._numbers()[self.value]

    @classmethod
    def _missing_(cls, value: object) -> _Numbered | None:
        if isinstance(value, int) and not isinstance(value, bool):
            for member in cls:
                if int(member) == value:
                    return member
        return None


class SessionState(_Numbered):
    Open = "Open"
    Closed = "Closed"
    OPEN = "Open"
    CLOSED = "Closed"


class TaskState(_Numbered):
    Pending = "Pending"
    Running = "Running"
    Succeed = "Succeed"
    Failed = "Failed"
    Cancelled = "Cancelled"
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEED = "Succeed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (TaskState.Succeed, TaskState.Failed, TaskState.Cancelled)


class ApplicationState(_Numbered):
    Enabled = "Enabled"
    Disabled = "Disabled"
    ENABLED = "Enabled"
    DISABLED = "Disabled"


class Shim(_Numbered):
    Host = "Host"
    Wasm = "Wasm"
    HOST = "Host"
    WASM = "Wasm"


@dataclasses.dataclass
class ApplicationSchema:
    input: str | None = None
    output: str | None = None
    common_data: str | None = None


@dataclasses.dataclass
class ApplicationAttributes:
    """What `register_application` takes (flamepy's fields)."""

    shim: Shim | str = Shim.Host
    image: str | None = None
    description: str | None = None
    labels: list[str] | None = None
    command: str | None = None
    arguments: list[str] | None = None
    environments: dict[str, str] | None = None
    working_directory: str | None = None
    max_instances: int | None = None
    delay_release: float | None = None
    schema: ApplicationSchema | dict[str, str | None] | None = None
    url: str | None = None
    installer: str | None = None


@dataclasses.dataclass
class SessionAttributes:
    """A session's request (flamepy's fields plus `priority`)."""

    application: str
    id: str | None = None
    common_data: bytes | None = None
    min_instances: int = 0
    max_instances: int | None = None
    batch_size: int = 1
    resreq: ResourceRequirement | None = None
    priority: int = 0


@dataclasses.dataclass
class Application:
    name: str
    state: ApplicationState
    creation_time: datetime.datetime
    shim: Shim
    version: int
    description: str | None
    labels: list[str]
    image: str | None
    command: str | None
    arguments: list[str]
    environments: dict[str, str]
    working_directory: str | None
    max_instances: int | None
    delay_release: float
    schema: ApplicationSchema | None
    url: str | None
    installer: str | None

    @property
    def id(self) -> str:
        return self.name


@dataclasses.dataclass
class Task:
    id: int
    session_id: str
    state: TaskState
    creation_time: datetime.datetime
    input: bytes | None = None
    output: bytes | None = None
    completion_time: datetime.datetime | None = None
    events: list[Event] = dataclasses.field(default_factory=list)
    message: str | None = None

    def is_completed(self) -> bool:
        """Terminal: Succeed, Failed or Cancelled (flamepy has no Cancelled)."""
        return self.state.is_terminal

    def is_failed(self) -> bool:
        return self.state is TaskState.Failed


def to_datetime(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


def task_from_wire(task: wire.Task) -> Task:
    return Task(
        id=task.id,
        session_id=task.session_id,
        state=TaskState(task.state),
        creation_time=to_datetime(task.creation_time),
        input=task.input,
        output=task.output,
        completion_time=to_datetime(task.completion_time) if task.completion_time is not None else None,
        events=list(task.events),
        message=task.message,
    )


def application_from_wire(app: wire.Application) -> Application:
    spec = app.spec
    schema = spec.schema
    return Application(
        name=app.name,
        state=ApplicationState(app.state),
        creation_time=to_datetime(app.creation_time),
        shim=Shim(spec.shim),
        version=app.version,
        description=spec.description,
        labels=list(spec.labels),
        image=spec.image,
        command=spec.command,
        arguments=list(spec.arguments),
        environments=dict(spec.environments),
        working_directory=spec.working_directory,
        max_instances=spec.max_instances,
        delay_release=spec.delay_release,
        schema=ApplicationSchema(schema.input, schema.output, schema.common_data) if schema else None,
        url=spec.url,
        installer=spec.installer,
    )


def _shim(value: Any) -> wire.Shim:
    text = str(value)
    for shim in wire.Shim:
        if shim.value.lower() == text.lower():
            return shim
    raise ValueError(f"unknown shim {text!r}; expected Host or Wasm")


def application_spec(attrs: ApplicationAttributes | dict[str, Any]) -> wire.ApplicationSpec:
    """The wire spec for flamepy-style attributes (a dataclass or a dict with its fields);
    raises ValueError naming a bad or unknown field."""
    if isinstance(attrs, ApplicationAttributes):
        values = dataclasses.asdict(attrs)
    else:
        known = {f.name for f in dataclasses.fields(ApplicationAttributes)}
        unknown = sorted(set(attrs) - known)
        if unknown:
            raise ValueError(
                f"unknown application attribute {unknown[0]!r}; expected one of {', '.join(sorted(known))}"
            )
        values = dict(attrs)
    fields: dict[str, Any] = {"shim": _shim(values.get("shim") or "Host")}
    for name in ("image", "description", "command", "working_directory", "max_instances", "url", "installer"):
        if values.get(name) is not None:
            fields[name] = values[name]
    if values.get("labels"):
        fields["labels"] = [str(v) for v in values["labels"]]
    if values.get("arguments"):
        fields["arguments"] = [str(v) for v in values["arguments"]]
    if values.get("environments"):
        environments = values["environments"]
        if isinstance(environments, list):  # flamepy also accepts [{name, value}]
            environments = {e["name"]: e["value"] for e in environments}
        fields["environments"] = {str(k): str(v) for k, v in environments.items()}
    if values.get("delay_release") is not None:
        fields["delay_release"] = float(values["delay_release"])
    schema = values.get("schema")
    if schema:
        if isinstance(schema, ApplicationSchema):
            schema = dataclasses.asdict(schema)
        fields["schema"] = wire.ApplicationSchema(**{k: v for k, v in schema.items() if v is not None})
    return wire.ApplicationSpec(**fields)


#: What a Runner package always leaves out (flamepy's defaults).
DEFAULT_PACKAGE_EXCLUDES = [
    ".venv",
    "venv",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "*.egg-info",
    ".git",
    ".gitignore",
    ".tox",
    "node_modules",
    "*.pyc",
    "*.pyo",
    ".DS_Store",
]


@dataclasses.dataclass
class FlamePackage:
    """flamepy's `package` configuration: where a Runner stores its package (`file://DIR`; None:
    the object cache) and which names it leaves out (fnmatch patterns)."""

    storage: str | None = None
    excludes: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_PACKAGE_EXCLUDES))
