"""The five tables as a mirror of the model: `ClusterTables` turns what `ClusterModel` says
changed into row updates of the `LiveTable`s (Nodes, Executors, Sessions, Tasks, Events).

Rules: only changed rows are redrawn, except on a reset or a rebuild (filter, drill-down);
tasks get rows only inside the model's window (`TASK_ROWS`); the events table keeps as many rows
as the model keeps events. It reads the model and writes tables; it never touches the feed, and
the caller says which view is on screen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from protocol import frontend as fe
from tui import views as v
from tui.model import Changes, ClusterModel
from tui.table import Cells, LiveTable

TASK_ROWS = 1000  # a bigger session shows its first tasks and the failed or retried ones
VIEWS = ("nodes", "executors", "sessions", "tasks", "events")  # keys 1-5, tab order
TITLES = {"nodes": "Nodes", "executors": "Executors", "sessions": "Sessions", "tasks": "Tasks", "events": "Events"}

Row = Callable[[Any, v.Context], Cells]


def all_rows(items: dict[Any, Any], row: Row, ctx: v.Context) -> list[tuple[str, Cells]]:
    return [(str(k), row(item, ctx)) for k, item in items.items()]


def some_rows(
    items: dict[str, Any], keys: Iterable[str], row: Row, ctx: v.Context
) -> Iterator[tuple[str, Cells | None]]:
    """Rows of `keys` only; a key gone from `items` yields None (the row is removed)."""
    for key in keys:
        item = items.get(key)
        yield key, None if item is None else row(item, ctx)


class ClusterTables:
    """Draws the model into the tables. `table` finds a view's table by id and `context` makes
    a fresh `views.Context` (now, wall clock, heartbeat ages) each time rows are made."""

    def __init__(
        self, model: ClusterModel, table: Callable[[str], LiveTable], context: Callable[[], v.Context]
    ) -> None:
        self.model = model
        self.table = table
        self.context = context
        self._event_seq = 0

    def render(self, changes: Changes, shown: str) -> None:
        """Redraw what `changes` says changed (everything on a reset); `shown` is the view on screen."""
        ctx = self.context()
        m = self.model
        if changes.reset:
            self.table("nodes").rebuild(all_rows(m.nodes, v.node_row, ctx))
            self.table("executors").rebuild(all_rows(m.executors, v.executor_row, ctx))
            self.table("sessions").rebuild(all_rows(m.sessions, v.session_row, ctx))
            self.rebuild_events(shown)
        else:
            self.table("nodes").sync(some_rows(m.nodes, changes.nodes, v.node_row, ctx))
            self.table("executors").sync(some_rows(m.executors, changes.executors, v.executor_row, ctx))
            self.table("sessions").sync(some_rows(m.sessions, changes.sessions, v.session_row, ctx))
            self.add_events(changes.events, shown)
        if changes.tasks:
            self.sync_tasks(changes.tasks, ctx)

    def tick(self, shown: str) -> None:
        """Heartbeat ages (and session ages, when shown) move without messages."""
        ctx = self.context()
        self.table("nodes").sync(all_rows(self.model.nodes, v.node_row, ctx))
        if shown == "sessions":
            self.table("sessions").sync(all_rows(self.model.sessions, v.session_row, ctx))

    def rebuild(self, view: str, shown: str) -> None:
        """Every row of `view` again, e.g. after its filter or scope changed."""
        ctx, m, table = self.context(), self.model, self.table(view)
        if view == "events":
            self.rebuild_events(shown)
            return
        source: dict[str, Any]
        row: Row
        if view == "nodes":
            source, row = m.nodes, v.node_row
        elif view == "executors":
            source, row = m.executors, v.executor_row
        elif view == "sessions":
            source, row = m.sessions, v.session_row
        else:
            self.sync_tasks(None, ctx)
            return
        table.rebuild(all_rows(source, row, ctx))

    def sync_tasks(self, changed: set[int] | None, ctx: v.Context) -> None:
        """Tasks get rows only inside the model's window (`TASK_ROWS`): running, failed and
        retried first; `changed` None redraws every row of the window."""
        table, tasks = self.table("tasks"), self.model.tasks
        window = self.model.task_window(TASK_ROWS)
        wanted = {str(i) for i in window}
        rows: list[tuple[str, Cells | None]] = [(k, None) for k in table.shown if k not in wanted]
        for task_id in window:
            key = str(task_id)
            if changed is None or key not in table.shown or task_id in changed:
                rows.append((key, v.task_row(tasks[task_id], ctx)))
        table.sync(rows)

    def rebuild_events(self, shown: str) -> None:
        table = self.table("events")
        table.clear()
        table.shown.clear()
        self.add_events(list(self.model.events), shown)

    def add_events(self, events: list[fe.ClusterEvent], shown: str) -> None:
        """Append `events` as new rows, drop the oldest past what the model keeps, and follow
        the newest unless the user has scrolled up in the Events view."""
        if not events:
            return
        table = self.table("events")
        ctx = self.context()
        rows = []
        for event in events:
            self._event_seq += 1
            rows.append((f"e{self._event_seq}", v.event_row(event, ctx)))
        table.sync(rows)
        while len(table.shown) > len(self.model.events):
            oldest = next(iter(table.shown))
            table.sync([(oldest, None)])
        if shown != "events" or table.cursor_row >= table.row_count - len(rows) - 1:
            table.move_cursor(row=table.row_count - 1)
