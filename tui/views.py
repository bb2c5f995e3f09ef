"""The dashboard's tables as data: columns and how one entity becomes one row of cells.

States are printed as words and coloured (never colour alone). Cells are plain values or Rich
`Text`; `sort_value` turns a cell back into something comparable. Every string from the wire
becomes a `Text` through `wire` (never a `str`: DataTable reads a `str` cell as console markup)
with its control characters escaped (`printable`), so a name or message can neither restyle the
dashboard nor write escape sequences to the terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from flamed.client.text import printable
from protocol.frontend import ClusterEvent
from protocol.types import Executor, Node, Session, Task

STATE_STYLES = {
    # node
    "Ready": "bold green",
    "Unknown": "bold yellow",
    "NotReady": "bold red",
    # connection
    "Connected": "green",
    "Draining": "yellow",
    "Closed": "red",
    # executor
    "Void": "dim",
    "Idle": "cyan",
    "Binding": "yellow",
    "Bound": "green",
    "Unbinding": "yellow",
    "Releasing": "magenta",
    "Released": "dim",
    # session
    "Open": "green",
    # task ("Queued": Running on the wire, waiting on its executor behind the one it runs)
    "Pending": "cyan",
    "Queued": "blue",
    "Running": "yellow",
    "Succeed": "green",
    "Failed": "bold red",
    "Cancelled": "dim",
}


def wire(value: str | None, style: str = "") -> Text:
    """A string from the wire as a cell: escaped, never markup; `-` when absent or empty."""
    return Text(printable(value) if value else "-", style=style)


def state_text(state: object) -> Text:
    word = "-" if state is None else str(state)
    return Text(word, style=STATE_STYLES.get(word, ""))


def age_text(seconds: float | None, warn: float = 5.0, bad: float = 15.0) -> Text:
    if seconds is None:
        return Text("-", style="dim")
    style = "red" if seconds >= bad else "yellow" if seconds >= warn else ""
    return Text(_duration(seconds), style=style)


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def count_text(n: int) -> str:
    """A count in at most 5 characters: 987, 12.3k, 105k, 2.1M."""
    if n < 10_000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k" if n < 100_000 else f"{n // 1000}k"
    return f"{n / 1_000_000:.1f}M"


def _gib(memory: int) -> str:
    return f"{memory / (1 << 30):.0f}G"


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int | None = None


def _wire_state(task: Task) -> str:
    return str(task.state)


def _no_split(session: Session) -> tuple[int, int]:
    return session.running, 0


@dataclass(frozen=True)
class Context:
    """What rows need besides their entity: the clock, heartbeat ages, and how the model tells
    running tasks from those queued on executors (`ClusterModel.task_phase`, `running_split`)."""

    now_mono: float
    now_wall_ms: int
    heartbeat_age: Callable[[str], float | None]
    task_phase: Callable[[Task], str] = _wire_state
    running_split: Callable[[Session], tuple[int, int]] = _no_split


NODE_COLUMNS = [
    Column("name", "Node"),
    Column("state", "State"),
    Column("conn", "Link"),
    Column("heartbeat", "Heard"),
    Column("executors", "Executors"),
    Column("cpu", "CPU used/cap"),
    Column("mem", "Mem free/cap"),
]


def _link(node: Node) -> Text:
    text = state_text(node.connection)
    if node.drained:
        text.append(" drained", style="bold magenta")
    if node.stopping:
        text.append(" stopping", style="bold magenta")
    return text


def node_row(node: Node, ctx: Context) -> tuple[Any, ...]:
    by_state = " ".join(f"{n} {s}" for s, n in sorted(node.executors.items())) or "none"
    used = node.capacity.cpu - node.allocatable.cpu
    return (
        wire(node.name),
        state_text(node.state),
        _link(node),
        age_text(ctx.heartbeat_age(node.name)),
        Text(printable(f"{sum(node.executors.values())}/{node.max_executors}: {by_state}")),
        f"{used}/{node.capacity.cpu}",
        f"{_gib(node.allocatable.memory)}/{_gib(node.capacity.memory)}",
    )


EXECUTOR_COLUMNS = [
    Column("id", "Executor"),
    Column("node", "Node"),
    Column("state", "State"),
    Column("session", "Session"),
    Column("app", "App"),
    Column("task", "Tasks"),
]


def executor_row(executor: Executor, ctx: Context) -> tuple[Any, ...]:
    tasks = ",".join(str(t) for t in executor.task_ids[:3]) + ("..." if len(executor.task_ids) > 3 else "")
    return (
        wire(executor.id),
        wire(executor.node),
        state_text(executor.state),
        wire(executor.session_id),
        wire(executor.application),
        tasks or "-",
    )


SESSION_COLUMNS = [
    Column("id", "Session"),
    Column("app", "App"),
    Column("state", "State"),
    Column("prio", "Pri"),
    Column("pending", "Pend"),
    Column("queued", "Queued"),  # Running on the wire, waiting on an executor behind the task it runs
    Column("running", "Run"),  # at most one per executor holding tasks of the session
    Column("succeed", "Done"),
    Column("failed", "Fail"),
    Column("cancelled", "Canc"),
    Column("age", "Age"),  # since it was created, open or closed
]


def session_row(session: Session, ctx: Context) -> tuple[Any, ...]:
    running, queued = ctx.running_split(session)
    return (
        wire(session.id),
        wire(session.spec.application),
        state_text(session.state),
        session.spec.priority,
        session.pending,
        queued,
        running,
        session.succeed,
        Text(str(session.failed), style="bold red" if session.failed else ""),
        session.cancelled,
        # Age, not how long it was open: a session closed in 0.4 s minutes ago is minutes old.
        _duration(max(0, ctx.now_wall_ms - session.creation_time) / 1000),
    )


TASK_COLUMNS = [
    Column("id", "Task"),
    Column("state", "State"),
    Column("attempt", "Attempt"),
    Column("retries", "Retries"),
    Column("duration", "Duration"),
    Column("executor", "Executor"),
    Column("message", "Message"),
]


def task_row(task: Task, ctx: Context) -> tuple[Any, ...]:
    end = task.completion_time or ctx.now_wall_ms
    duration = _duration(max(0, end - task.creation_time) / 1000) if task.creation_time else "-"
    return (
        task.id,
        state_text(ctx.task_phase(task)),
        task.attempt,
        Text(str(task.retry_count), style="yellow" if task.retry_count else ""),
        duration,
        wire(task.executor_id),
        Text(printable((task.message or "")[:60])),
    )


EVENT_COLUMNS = [
    Column("time", "Time"),
    Column("kind", "Kind"),
    Column("subject", "Subject"),
    Column("message", "What happened"),
]


def event_row(event: ClusterEvent, ctx: Context) -> tuple[Any, ...]:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.time / 1000)) if event.time else "-"
    words = event.message.split()
    style = next((STATE_STYLES[w.strip(":().,")] for w in words if w.strip(":().,") in STATE_STYLES), "")
    return (stamp, wire(event.kind), wire(event.subject), Text(printable(event.message), style=style))


def sort_value(cell: object) -> tuple[int, Any]:
    """Cells compare by kind first (numbers before words), so mixed columns still sort."""
    if isinstance(cell, int | float):
        return (0, cell)
    text = cell.plain if isinstance(cell, Text) else str(cell)
    try:
        return (0, float(text.rstrip("smh")) * {"s": 1, "m": 60, "h": 3600}.get(text[-1:], 1))
    except ValueError:
        return (1, text.lower())


def row_text(cells: tuple[Any, ...]) -> str:
    """A row as one lower-case string, for the `/` filter."""
    return " ".join(c.plain if isinstance(c, Text) else str(c) for c in cells).lower()
