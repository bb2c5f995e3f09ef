"""`flmctl view`'s pages: one application, session, task or node as `Label:   value` lines,
and a session with its tasks as JSON (`-o json`).

Pure: wire structs in, text out. Labels are padded to 15 columns as in Flame's flmctl; lists and
maps follow their label, one tab-indented line each. Every value from the wire goes through
`printable` (its control characters escaped); the tabs and newlines of the layout are ours. The
JSON of `-o json` needs nothing more: `json.dumps` escapes every control and non-ASCII character.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import msgspec

from flamed.cli.tables import clock, clock_ms, node_status, resources
from flamed.client.text import printable
from protocol.resources import format_size
from protocol.types import Application, Event, Node, Session, Task


def _line(label: str, value: object = "") -> str:
    return f"{label + ':':<15}{printable(str(value))}".rstrip()


def _item(value: object) -> str:
    """One tab-indented line of a list or map (the tab is ours, the value is escaped)."""
    return f"\t{printable(str(value))}"


def format_duration(seconds: float) -> str:
    """`1m`, `1m 30s`, `2h`, `500ms` (humantime-like); a value that is not finite as it is
    (a state written before such values were refused must still print)."""
    if not math.isfinite(seconds):
        return str(seconds)
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    total = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return " ".join(parts)


def _schema_type(schema: str | None) -> str:
    if not schema:
        return "-"
    try:
        value = json.loads(schema)
    except ValueError:
        return "-"
    kind = value.get("type") if isinstance(value, dict) else None
    return str(kind) if kind else "-"


def view_application(app: Application) -> str:
    spec = app.spec
    lines = [
        _line("Name", app.name),
        _line("Description", spec.description or "-"),
        _line("Shim", spec.shim),
        _line("Image", spec.image or "-"),
        _line("URL", spec.url or "-"),
        _line("Installer", spec.installer or "-"),
        _line("Labels"),
        *[_item(label) for label in spec.labels],
        _line("Command", spec.command or "-"),
        _line("Arguments"),
        *[_item(argument) for argument in spec.arguments],
        _line("Environments"),
        *[_item(f"{name}: {value}") for name, value in spec.environments.items()],
        _line("WorkingDir", spec.working_directory or "-"),
        _line("Max Instances", spec.max_instances if spec.max_instances is not None else "-"),
        _line("Delay Release", format_duration(spec.delay_release)),
        _line("Schema"),
        _item(f"Input: {_schema_type(spec.schema.input if spec.schema else None)}"),
        _item(f"Output: {_schema_type(spec.schema.output if spec.schema else None)}"),
        _item(f"Common Data: {_schema_type(spec.schema.common_data if spec.schema else None)}"),
    ]
    return "\n".join(lines)


def _events(events: Sequence[Event]) -> list[str]:
    return [_line("Events")] + [
        f"  {clock_ms(e.creation_time)}: {printable(e.message or '')} ({e.code})" for e in events
    ]


def view_session(session: Session) -> str:
    tasks = f"{session.pending} pending, {session.running} running, {session.succeed} succeed, {session.failed} failed"
    lines = [
        _line("Session", session.id),
        _line("Application", session.spec.application),
        _line("State", session.state),
        _line("Resources", resources(session.spec.resreq)),
        _line("Creation Time", clock(session.creation_time)),
        _line("Tasks", tasks),
        *_events(session.events),
    ]
    return "\n".join(lines)


def _data(data: bytes | None) -> str:
    """A task's input or output for a terminal: its size and, if it is text, its start."""
    if data is None:
        return "-"
    size = format_size(len(data)) if len(data) >= 1024 else f"{len(data)} bytes"
    try:
        text = data[:PREVIEW].decode()
    except UnicodeDecodeError:
        return f"{size} (binary)"
    more = "..." if len(data) > PREVIEW else ""
    return f"{size}: {text}{more}"


#: Bytes of a task's input or output `view -t` shows (all of it with `-o json`).
PREVIEW = 200


def view_task(task: Task, application: str) -> str:
    lines = [
        _line("Task", task.id),
        _line("Session", task.session_id),
        _line("Application", application),
        _line("State", task.state),
        _line("Attempt", f"{task.attempt} ({task.retry_count} retries)"),
        _line("Executor", task.executor_id or "-"),
        _line("Creation Time", clock_ms(task.creation_time)),
        _line("Completion", clock_ms(task.completion_time) if task.completion_time else "-"),
        _line("Input", _data(task.input)),
        _line("Output", _data(task.output)),
    ]
    if task.message:
        lines.append(_line("Message", task.message))
    lines.extend(_events(task.events))
    return "\n".join(lines)


def task_json(task: Task, application: str) -> str:
    """One task with every field (`view -s S -t N -o json`); bytes as base64."""
    data: dict[str, Any] = _plain(task)
    data["application"] = application
    return json.dumps(data, indent=2)


def view_node(node: Node) -> str:
    lines = [
        _line("Name", node.name),
        _line("Hostname", node.hostname),
        _line("Status", node_status(node)),
        _line("Capacity"),
        f"\tCPU: {node.capacity.cpu}",
        f"\tMemory: {format_size(node.capacity.memory)}",
        _line("Info"),
        _item(f"Arch: {node.arch or '-'}"),
        _item(f"OS: {node.os or '-'}"),
    ]
    return "\n".join(lines)


def _plain(value: object) -> Any:
    """JSON-ready form of a wire struct with every field, defaults included (bytes as base64)."""
    if isinstance(value, msgspec.Struct):
        return {name: _plain(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return msgspec.to_builtins(value)


def session_json(session: Session, tasks: Sequence[Task]) -> str:
    data: dict[str, Any] = _plain(session)
    data["tasks"] = _plain(list(tasks))
    return json.dumps(data, indent=2)
