"""Shared entity types and state enums of the Flame wire protocol.

These Structs describe what the session manager reports about applications, sessions, tasks,
nodes and executors. They are plain data, no imports of our own packages; the one behaviour
is flamepy's `ResourceRequirement.from_string` (the format is described in resources.py).

Rules (see PROTOCOL.md, "Evolution"): a new field always has a default; a field is never
retyped or reused; enum values keep Flame's spelling because users and logs show them.
Timestamps are Unix milliseconds (int); durations are seconds (float).
"""

from __future__ import annotations

import enum
import re

import msgspec


class SessionState(enum.StrEnum):
    Open = "Open"
    Closed = "Closed"


class TaskState(enum.StrEnum):
    Pending = "Pending"
    Running = "Running"
    Succeed = "Succeed"
    Failed = "Failed"
    Cancelled = "Cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_TASK_STATES


_TERMINAL_TASK_STATES = frozenset({TaskState.Succeed, TaskState.Failed, TaskState.Cancelled})


class ApplicationState(enum.StrEnum):
    Enabled = "Enabled"
    Disabled = "Disabled"


class Shim(enum.StrEnum):
    Host = "Host"
    Wasm = "Wasm"


class ExecutorState(enum.StrEnum):
    Void = "Void"
    Idle = "Idle"
    Binding = "Binding"
    Bound = "Bound"
    Unbinding = "Unbinding"
    Releasing = "Releasing"
    Released = "Released"


class NodeState(enum.StrEnum):
    Unknown = "Unknown"
    Ready = "Ready"
    NotReady = "NotReady"


class ConnectionState(enum.StrEnum):
    Connected = "Connected"
    Draining = "Draining"
    Closed = "Closed"


class Struct(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of every non-message wire struct: keyword-only, defaults omitted on the wire."""


class ResourceRequirement(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """Per-executor resources; memory in bytes. Compared field by field."""

    cpu: int = 1
    memory: int = 1 << 30
    gpu: int = 0

    @classmethod
    def from_string(cls, text: str) -> ResourceRequirement:
        """flamepy's parser: "cpu=2,mem=4Gi,gpu=0" (omitted keys keep their defaults); raises
        ValueError naming the bad entry. The format is described in resources.py."""
        fields: dict[str, int] = {}
        for entry in text.split(","):
            key, sep, value = entry.partition("=")
            key = key.strip().lower()
            if not sep or not key or not value.strip() or "=" in value:
                raise ValueError(f"bad resource entry {entry!r} in {text!r}; expected key=value")
            if key == "cpu":
                fields["cpu"] = _count(value, entry)
            elif key in ("mem", "memory"):
                fields["memory"] = parse_size(value)
            elif key == "gpu":
                fields["gpu"] = _count(value, entry)
            else:
                raise ValueError(f"unknown resource {key!r} in {text!r}; expected cpu, mem or gpu")
        return cls(**fields)


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgtp]?)(?:i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in a size such as "512Mi", "1G", "2048"; raises ValueError."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"bad size {text!r}; expected a number with an optional unit such as 512Mi or 2G")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def _count(value: str, entry: str) -> int:
    if not value.strip().isdigit():
        raise ValueError(f"bad resource entry {entry!r}; expected a whole number")
    return int(value)


class ApplicationSchema(Struct):
    input: str | None = None
    output: str | None = None
    common_data: str | None = None


class ApplicationSpec(Struct):
    """What an application is and how its instances are started (Flame's ApplicationSpec)."""

    shim: Shim = Shim.Host
    description: str | None = None
    labels: list[str] = []
    image: str | None = None
    command: str | None = None
    arguments: list[str] = []
    environments: dict[str, str] = {}
    working_directory: str | None = None
    max_instances: int | None = None
    delay_release: float = 60.0
    schema: ApplicationSchema | None = None
    url: str | None = None
    installer: str | None = None


class Application(Struct):
    name: str
    spec: ApplicationSpec
    state: ApplicationState = ApplicationState.Enabled
    creation_time: int = 0
    version: int = 1


class SessionSpec(Struct):
    """A session's request. `resreq` is resolved by the session manager when omitted."""

    application: str
    common_data: bytes | None = None
    min_instances: int = 0
    max_instances: int | None = None
    priority: int = 0
    resreq: ResourceRequirement | None = None
    batch_size: int = 1


class Event(Struct):
    """A state change with its reason. Task events use the task state as code (0-4, Flame);
    session events use 1001+ (bind failures) and 2001+ (recovery)."""

    code: int
    message: str | None = None
    creation_time: int = 0


class Session(Struct):
    id: str
    spec: SessionSpec
    state: SessionState
    creation_time: int
    completion_time: int | None = None
    pending: int = 0
    running: int = 0
    succeed: int = 0
    failed: int = 0
    cancelled: int = 0
    events: list[Event] = []


class Task(Struct):
    id: int
    session_id: str
    state: TaskState
    input: bytes | None = None
    output: bytes | None = None
    creation_time: int = 0
    completion_time: int | None = None
    attempt: int = 0
    retry_count: int = 0
    executor_id: str | None = None
    message: str | None = None
    events: list[Event] = []


class NodeInfo(Struct):
    """What an executor manager reports about its host at registration."""

    name: str
    hostname: str
    capacity: ResourceRequirement
    max_executors: int
    arch: str = ""
    os: str = ""


class Node(Struct):
    name: str
    hostname: str
    state: NodeState
    connection: ConnectionState | None = None
    capacity: ResourceRequirement = ResourceRequirement()
    allocatable: ResourceRequirement = ResourceRequirement()
    max_executors: int = 0
    arch: str = ""
    os: str = ""
    incarnation: str = ""
    epoch: int = 0
    drained: bool = False
    last_heartbeat_age: float | None = None
    #: its executor manager is draining to stop (SIGTERM): no new work, goodbye soon
    stopping: bool = False
    executors: dict[str, int] = {}


class Executor(Struct):
    id: str
    node: str
    state: ExecutorState
    resreq: ResourceRequirement = ResourceRequirement()
    session_id: str | None = None
    application: str | None = None
    task_ids: list[int] = []
    creation_time: int = 0
