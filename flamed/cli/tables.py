"""`flmctl`'s tables and the cell formats they share: Flame's borderless layout (a header row,
cells padded by one space) for `flmctl list -a|-s|-e|-n` and `flmctl stats`.

Pure: wire structs in, text out. Column names and orders follow Flame's flmctl so scripts that
read the output keep working; `format_table` is also flmping's. Every cell goes through
`printable`: a name, label or hostname from the wire never puts a control character (an escape
sequence, a line break that forges rows) on the operator's terminal.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Sequence

from flamed.client.text import printable
from protocol.resources import format_resreq, format_size
from protocol.types import Application, Executor, Node, ResourceRequirement, Session


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Borderless table (comfy-table's NOTHING preset): one space of padding each side of a
    cell, columns as wide as their widest cell, no rules; trailing blanks trimmed. Control
    characters in cells are escaped (`printable`), so one cell is one line."""
    cells = [[printable(str(h)) for h in headers], *[[printable(str(c)) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["".join(f" {cell:<{width}} " for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def clock(ms: int | None) -> str:
    """`HH:MM:SS` (UTC) of a Unix-ms time, or `-`."""
    if not ms:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%H:%M:%S")


def clock_ms(ms: int) -> str:
    """`HH:MM:SS.mmm` (UTC) of a Unix-ms time."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%H:%M:%S.") + f"{ms % 1000:03d}"


def resources(resreq: ResourceRequirement | None) -> str:
    return format_resreq(resreq) if resreq is not None else "-"


def application_table(applications: Sequence[Application]) -> str:
    rows = [
        (
            a.name,
            a.state,
            a.spec.shim,
            ", ".join(a.spec.labels) or "-",
            clock(a.creation_time),
            a.spec.command or "-",
        )
        for a in applications
    ]
    return format_table(["Name", "State", "Shim", "Tags", "Created", "Command"], rows)


def _session_order(a: Session, b: Session) -> int:
    """Open first, then by numeric id; ids that are not numbers compare equal (as Flame)."""
    if (a.state == "Open") != (b.state == "Open"):
        return -1 if a.state == "Open" else 1
    if a.id.isdigit() and b.id.isdigit():
        return (int(a.id) > int(b.id)) - (int(a.id) < int(b.id))
    return 0


def session_table(sessions: Sequence[Session]) -> str:
    ordered = sorted(sessions, key=functools.cmp_to_key(_session_order))
    rows = [
        (
            s.id,
            s.state,
            s.spec.application,
            resources(s.spec.resreq),
            s.spec.priority,
            s.pending,
            s.running,
            s.succeed,
            s.failed,
            clock(s.creation_time),
        )
        for s in ordered
    ]
    headers = ["ID", "State", "App", "Resources", "Priority", "Pending", "Running", "Succeed", "Failed", "Created"]
    return format_table(headers, rows)


def executor_table(executors: Sequence[Executor]) -> str:
    rows = [(e.id, e.state, e.session_id or "-", e.node) for e in executors]
    return format_table(["ID", "State", "Session", "Node"], rows)


def node_status(node: Node) -> str:
    """The node state, with `,Drained` when it is cordoned (as kubectl's SchedulingDisabled)
    and `,Stopping` while its executor manager drains to stop."""
    return str(node.state) + (",Drained" if node.drained else "") + (",Stopping" if node.stopping else "")


def node_table(nodes: Sequence[Node]) -> str:
    """Flame's columns, then the link as the session manager sees it: connection state
    (Connected / Draining, `-` once closed) and seconds since the node was last heard."""
    rows = [
        (
            n.name,
            n.hostname,
            node_status(n),
            n.capacity.cpu,
            format_size(n.capacity.memory),
            n.arch or "-",
            n.os or "-",
            n.connection or "-",
            "-" if n.last_heartbeat_age is None else f"{n.last_heartbeat_age:.1f}s",
        )
        for n in nodes
    ]
    return format_table(["NAME", "HOSTNAME", "STATUS", "CPU", "MEMORY", "ARCH", "OS", "CONNECTION", "HEARTBEAT"], rows)


def stats_table(stats: dict[str, float]) -> str:
    """`GetStats` as a two-column table, counters (`*_total`) and gauges alike, sorted by name."""
    rows = [(name, f"{value:g}") for name, value in sorted(stats.items())]
    return format_table(["NAME", "VALUE"], rows)
