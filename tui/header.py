"""The words of the dashboard's header: the status line (link, pause, where you are) and the
summary of totals beside the throughput sparkline.

Pure: each function takes what it shows and returns a string or Rich `Text`; the app puts them
into the widgets and sets the classes (`bad`, `stale`).
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from flamed.client.text import printable
from tui import views as v
from tui.feed import Connected
from tui.model import ClusterModel
from tui.render import TASK_ROWS, TITLES
from tui.table import LiveTable


def link_line(connected: Connected | None, endpoint: str, reason: str, age: float | None, paused: bool) -> str:
    """Connected to which cluster, or DISCONNECTED with the reason and how old the data is."""
    if connected is not None:
        cluster = printable(connected.cluster) or "cluster"  # the session manager's name: a wire string
        line = f"{cluster} at {endpoint}: connected"
    else:
        since = "no data yet" if age is None else f"data is {v._duration(age)} old"
        line = f"DISCONNECTED ({printable(reason)}); {since}; reconnecting to {endpoint}"
    if paused:
        line += "  [PAUSED: p resumes]"
    return line


def view_line(history: Iterable[tuple[str, str | None]], view: str, table: LiveTable, task_count: int) -> str:
    """The view with its drill-down breadcrumbs, then its scope, task window, filter and sort."""
    crumbs = " > ".join(TITLES[past] for past, _ in history)
    extra = [f"view {crumbs + ' > ' if crumbs else ''}{TITLES[view]}"]
    if table.scope_label:
        extra.append(table.scope_label)
    if view == "tasks" and task_count > TASK_ROWS:
        extra.append(f"first {TASK_ROWS} of {task_count} tasks + failed/retried")
    if table.filter_text:
        extra.append(f"filter '{table.filter_text}'")
    if table.sort_column is not None:
        extra.append(f"sort {table.spec[table.sort_column].label}{' desc' if table.sort_reverse else ''}")
    return ", ".join(extra)


def summary_text(model: ClusterModel) -> Text:
    """Counts by state of nodes, executors, sessions and tasks, and the last throughput."""
    totals = model.totals()
    stats = model.stats
    rate = model.throughput[-1] if model.throughput else 0.0

    def count(prefix: str, states: Iterable[str]) -> Text:
        parts = Text()
        for state in states:
            n = totals.get(f"{prefix}_{state}", 0)
            if n:
                parts.append(f" {n} ")
                parts.append(state, style=v.STATE_STYLES.get(state, ""))
        return parts or Text(" 0")

    text = Text("Nodes")
    text.append_text(count("nodes", ("Ready", "Unknown", "NotReady")))
    text.append("  Executors")
    text.append_text(count("executors", ("Bound", "Idle", "Binding", "Unbinding", "Releasing", "Void")))
    text.append("\nSessions")
    text.append_text(count("sessions", ("Open", "Closed")))
    text.append("\nTasks")
    for state in ("Pending", "Running", "Succeed", "Failed"):
        text.append(f" {v.count_text(int(stats.get(f'tasks_{state.lower()}', 0)))} ")
        text.append(state, style=v.STATE_STYLES[state])
    text.append(f"\nThroughput {rate:,.0f} tasks/s (last minute ->)")
    return text
