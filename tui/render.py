"""The five tables as a mirror of the model: `ClusterTables` turns what `ClusterModel` says
changed into row updates of the `LiveTable`s (Nodes, Executors, Sessions, Tasks, Events).

Rules: only changed rows are redrawn, except on a reset or a rebuild (filter, drill-down);
the Tasks view shows one page of `TASK_ROWS` tasks of the watched session, in id order, of
those in the chosen state (`task_phase`) and matching the `/` filter, chosen over every task of
the session, so any task can be reached; the events table keeps as many rows as the model keeps
events. It reads the model and writes tables; it never touches the feed, and the caller says
which view is on screen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from protocol import frontend as fe
from tui import views as v
from tui.model import Changes, ClusterModel, TaskPage
from tui.table import Cells, LiveTable

TASK_ROWS = 1000  # tasks on one page of the Tasks view ([ and ] turn pages)
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
        #: the Tasks view: the state it is narrowed to (None: all), the page asked for, the page shown
        self.task_phase: str | None = None
        self.task_page_no = 0
        self.task_page = TaskPage([], 0, 1, 0)

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
        if changes.tasks or (changes.executors and m.tasks):
            # An executor that took or finished tasks moves its others between Running and Queued.
            # So does a task that finished: the next one on its executor runs now.
            moved = set(changes.tasks)
            executors = set(changes.executors)
            for task_id in changes.tasks:
                task = m.tasks.get(task_id)
                if task is not None and task.executor_id is not None:
                    executors.add(task.executor_id)
            for executor_id in executors:
                executor = m.executors.get(executor_id)
                if executor is not None and executor.session_id == m.tasks_session:
                    moved.update(executor.task_ids)
            self.sync_tasks(moved, ctx)

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
        """Rows for the tasks of the current page (see the module rules), which is chosen
        again; `changed` None redraws every row of the page."""
        table, tasks = self.table("tasks"), self.model.tasks
        page = self.model.task_page(TASK_ROWS, self.task_page_no, self.task_phase, table.filter_text)
        self.task_page, self.task_page_no = page, page.page
        wanted = {str(i) for i in page.ids}
        rows: list[tuple[str, Cells | None]] = [(k, None) for k in table.shown if k not in wanted]
        for task_id in page.ids:
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
