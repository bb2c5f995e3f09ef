"""The words of the dashboard's header: the status line (link, pause, where you are), the
summary of totals and the throughput sparkline beside it.

Pure: each function takes what it shows and returns a string or Rich `Text`; the app puts them
into the widgets and sets the classes (`bad`, `stale`). The sparkline is drawn here rather than
by Textual's, which scales from the smallest value to the largest (a steady rate looks like
noise) and fills its whole box when it has one value or none: ours starts at zero, shows the
newest point at the right edge, and stays empty, saying so, while there is no data.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text

from flamed.client.text import printable
from tui import views as v
from tui.feed import Connected
from tui.model import QUEUED, ClusterModel, TaskPage
from tui.render import TITLES
from tui.table import LiveTable

#: Eighths of a cell, for the sparkline's bars.
BARS = " ▁▂▃▄▅▆▇█"


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


def view_line(
    history: Iterable[tuple[str, str | None]], view: str, table: LiveTable, page: TaskPage, phase: str | None
) -> str:
    """The view with its drill-down breadcrumbs, then its scope, task page, filter and sort."""
    crumbs = " > ".join(TITLES[past] for past, _ in history)
    extra = [f"view {crumbs + ' > ' if crumbs else ''}{TITLES[view]}"]
    if table.scope_label:
        extra.append(table.scope_label)
    if view == "tasks":
        which = f"{phase} " if phase else ""
        extra.append(f"{page.matching:,} {which}tasks")
        if page.pages > 1:
            extra.append(f"page {page.page + 1}/{page.pages} ([ ])")
    if table.filter_text:
        extra.append(f"filter '{table.filter_text}'")
    if table.sort_column is not None:
        extra.append(f"sort {table.spec[table.sort_column].label}{' desc' if table.sort_reverse else ''}")
    return ", ".join(extra)


def summary_text(model: ClusterModel) -> Text:
    """Counts by state of nodes, executors, sessions and tasks, and the last throughput."""
    totals = model.totals()
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
    tasks = model.task_counts()
    # The Sessions table's words for them: the line must fit beside the sparkline at 80 columns.
    for state, word in (
        ("Pending", "Pend"),
        (QUEUED, "Queued"),
        ("Running", "Run"),
        ("Succeed", "Done"),
        ("Failed", "Fail"),
    ):
        text.append(f" {v.count_text(tasks[state])} ")
        text.append(word, style=v.STATE_STYLES[state])
    text.append(f"\nThroughput {rate:,.0f} tasks/s (last minute ->)")
    return text


def spark_text(values: Iterable[float], width: int, height: int) -> Text:
    """The last `width` values as bars `height` lines high, from zero to the largest, newest at
    the right; any value above zero shows at least the lowest bar. No values: empty, saying so."""
    shown = list(values)[-width:]
    if not shown:
        blank = [" " * width] * (height - 1)
        return Text("\n".join([*blank, "no data yet".center(width)]), style="dim")
    top = max(shown)
    eighths = [0 if top <= 0 or x <= 0 else max(1, round(x / top * height * 8)) for x in shown]
    lines = []
    for row in range(height - 1, -1, -1):  # the top line first
        bars = "".join(BARS[max(0, min(8, e - row * 8))] for e in eighths)
        lines.append(bars.rjust(width))
    return Text("\n".join(lines), style="green")
