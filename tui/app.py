"""`flame-tui`: a live dashboard of a Flame cluster (Textual).

The app is thin: a `Feed` (the session manager's `SubscribeCluster` push, or a fake in tests)
delivers messages, `ClusterModel` folds them into dicts by id and says what changed, and
`ClusterTables` updates only those rows of each `LiveTable`. Views: Nodes, Executors, Sessions,
Tasks (of the selected session, via `WatchTasks`) and Events; a header with totals, throughput
and connection status (`header`). The app holds the layout, the feed hookup and the key actions;
the modal screens and the command palette live in `screens` and `palette`. Wire strings are
shown escaped and never as markup: cells through `views.wire`, notifications with `markup=False`
and `printable`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import ContentSwitcher, DataTable, Footer, Input, Static

from flamed.client import FlameError
from flamed.client.text import printable
from protocol import frontend as fe
from tui import views as v
from tui.feed import Connected, Disconnected, Feed, FeedItem, LiveFeed, Notice
from tui.header import link_line, spark_text, summary_text, view_line
from tui.model import TASK_PHASES, Changes, ClusterModel
from tui.palette import palette_commands
from tui.render import VIEWS, ClusterTables
from tui.screens import ConfirmScreen, HelpScreen
from tui.table import LiveTable


class FlameTui(App[None]):
    TITLE = "flame-tui"
    CSS = """
    #main { height: 1fr; }
    #views { height: 1fr; }
    #views > LiveTable { height: 1fr; }
    #top { height: 4; }
    #summary { width: 1fr; height: 4; padding: 0 1; }
    #spark { width: 24; height: 4; }
    #status.bad { background: $error; color: $text; text-style: bold; }
    #status { height: 1; padding: 0 1; background: $primary-background; }
    #filter { display: none; height: 3; }
    #filter.shown { display: block; }
    .stale LiveTable { opacity: 60%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "show('nodes')", "Nodes"),
        Binding("2", "show('executors')", "Exec"),
        Binding("3", "show('sessions')", "Sess"),
        Binding("4", "show('tasks')", "Tasks"),
        Binding("5", "show('events')", "Events"),
        Binding("tab", "cycle(1)", "next", show=False, priority=True),
        Binding("shift+tab", "cycle(-1)", "prev", show=False, priority=True),
        Binding("slash", "filter", "filter"),
        Binding("s", "sort", "sort"),
        Binding("f", "task_phase", "state", show=False),
        Binding("right_square_bracket", "task_page(1)", "next page", show=False),
        Binding("left_square_bracket", "task_page(-1)", "previous page", show=False),
        Binding("p", "pause", "pause"),
        Binding("c", "close_session", "close", show=False),
        Binding("d", "drain(True)", "drain", show=False),
        Binding("u", "drain(False)", "undrain", show=False),
        Binding("escape", "step_back", "back", show=False),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(
        self,
        feed: Feed,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        tick: float = 1.0,
    ) -> None:
        super().__init__()
        self.feed = feed
        self.clock = clock
        self.wall_ms = wall_ms
        self.tick_interval = tick
        self.model = ClusterModel()
        self.view = "nodes"
        self.paused = False
        self.connected: Connected | None = None
        self.disconnect_reason = "connecting"
        self.history: list[tuple[str, str | None]] = []  # drill-down breadcrumbs: (view, row key)
        self._pending = Changes()  # what changed while paused
        self.tables = ClusterTables(self.model, self.table, self._ctx)

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        with Vertical(id="main"):
            yield Static("", id="status")
            with Horizontal(id="top"):
                yield Static("", id="summary")
                yield Static("", id="spark")
            yield Input(placeholder="filter: any text of the row; enter keeps it, esc clears", id="filter")
            with ContentSwitcher(initial="nodes", id="views"):
                yield LiveTable(v.NODE_COLUMNS, id="nodes")
                yield LiveTable(v.EXECUTOR_COLUMNS, id="executors")
                yield LiveTable(v.SESSION_COLUMNS, id="sessions")
                yield LiveTable(v.TASK_COLUMNS, id="tasks", own_filter=False)
                yield LiveTable(v.EVENT_COLUMNS, id="events")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.feed.start(self._from_thread)
        if self.tick_interval > 0:
            self.set_interval(self.tick_interval, self.refresh_clock)
        self.table().focus()
        self.refresh_header()

    def on_unmount(self) -> None:
        self.feed.stop()

    def table(self, view: str | None = None) -> LiveTable:
        return self.query_one(f"#{view or self.view}", LiveTable)

    # ------------------------------------------------------------------ feed

    def _from_thread(self, items: list[FeedItem]) -> None:
        with contextlib.suppress(RuntimeError):  # the app is shutting down
            self.call_from_thread(self.apply_feed, *items)

    def apply_feed(self, *items: FeedItem) -> None:
        """Apply items from the feed (on the app's thread), then redraw what they changed once."""
        for item in items:
            self._apply_one(item)
        if not self.paused:
            self._render(self._take_pending())
        self.refresh_header()

    def _apply_one(self, item: FeedItem) -> None:
        now = self.clock()
        if isinstance(item, Connected):
            self.connected = item
        elif isinstance(item, Disconnected):
            self.connected = None
            self.disconnect_reason = item.reason
        elif isinstance(item, Notice):
            self.say(item.message, severity="error" if item.error else "information", timeout=6 if item.error else None)
        else:
            changes = self.model.apply(item, now)
            if isinstance(item, fe.ClusterSnapshot | fe.ClusterUpdates) and self.connected is None:
                self.connected = Connected(self.feed.endpoint)
            self._pending.merge(changes)

    def say(self, message: str, *, severity: SeverityLevel = "information", timeout: float | None = None) -> None:
        """A notification whose text may hold wire strings: escaped, never read as markup."""
        self.notify(printable(message), severity=severity, timeout=timeout, markup=False)

    def _take_pending(self) -> Changes:
        changes, self._pending = self._pending, Changes()
        return changes

    def _ctx(self) -> v.Context:
        now, model = self.clock(), self.model
        return v.Context(
            now,
            self.wall_ms(),
            lambda name: model.heartbeat_age(name, now),
            task_phase=model.task_phase,
            running_split=model.running_split,
        )

    def _render(self, changes: Changes) -> None:
        if not changes:
            return
        with self.batch_update():
            self.tables.render(changes, self.view)

    # ------------------------------------------------------------------ clock

    def refresh_clock(self) -> None:
        """Every second: heartbeat ages and session ages move without messages."""
        if not self.is_running:
            return
        if not self.paused:
            self.tables.tick(self.view)
        self.refresh_header()

    def refresh_header(self) -> None:
        status = self.query_one("#status", Static)
        now = self.clock()
        age = self.model.data_age(now)
        if self.connected is not None:
            status.remove_class("bad")
        else:
            status.add_class("bad")
        self.screen.set_class(self.connected is None and age is not None, "stale")
        line = link_line(self.connected, self.feed.endpoint, self.disconnect_reason, age, self.paused)
        tables = self.tables
        where = view_line(self.history, self.view, self.table(), tables.task_page, tables.task_phase)
        status.update(Text(line + "  |  " + where))
        self.query_one("#summary", Static).update(summary_text(self.model))
        spark = self.query_one("#spark", Static)
        spark.update(spark_text(self.model.throughput, spark.size.width or 24, spark.size.height or 4))

    # ------------------------------------------------------------------ actions

    def action_show(self, view: str) -> None:
        self.history.clear()
        self._switch(view)

    def _switch(self, view: str) -> None:
        self.view = view
        self.query_one("#views", ContentSwitcher).current = view
        table = self.table()
        table.focus()
        if view == "sessions":
            self.refresh_clock()
        elif view == "events" and table.row_count:
            # A hidden table cannot scroll: follow the newest event once it is shown.
            self.call_after_refresh(table.move_cursor, row=table.row_count - 1)
        self.refresh_header()

    def action_cycle(self, step: int) -> None:
        self.action_show(VIEWS[(VIEWS.index(self.view) + step) % len(VIEWS)])

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.value = self.table().filter_text
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self._set_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._close_filter()

    def _close_filter(self) -> None:
        self.query_one("#filter", Input).remove_class("shown")
        self.table().focus()

    def _set_filter(self, text: str) -> None:
        table = self.table()
        table.filter_text = text.strip().lower()
        if self.view == "tasks":
            self.tables.task_page_no = 0
        self._rebuild(self.view)
        self.refresh_header()

    def _rebuild(self, view: str) -> None:
        self.tables.rebuild(view, self.view)

    def action_sort(self) -> None:
        label = self.table().cycle_sort()
        self.notify(f"sorted by {label}", timeout=2)
        self.refresh_header()

    def action_task_phase(self) -> None:
        """`f`: narrow the Tasks view to the next state (Running, Queued, ..., then all)."""
        if self.view != "tasks":
            self.notify("f narrows the Tasks view by state (Tasks view: 4)", timeout=3)
            return
        phases: list[str | None] = [None, *TASK_PHASES]
        tables = self.tables
        tables.task_phase = phases[(phases.index(tables.task_phase) + 1) % len(phases)]
        tables.task_page_no = 0
        self._rebuild("tasks")
        self.notify(f"tasks: {tables.task_phase or 'every state'}", timeout=2)
        self.refresh_header()

    def action_task_page(self, step: int) -> None:
        """`]` / `[`: the next or previous page of the Tasks view."""
        if self.view != "tasks":
            return
        self.tables.task_page_no = max(0, self.tables.task_page_no + step)
        self._rebuild("tasks")
        self.refresh_header()

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self._render(self._take_pending())
            self.refresh_clock()
        self.refresh_header()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_step_back(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_class("shown"):
            box.value = ""
            self._close_filter()
            return
        table = self.table()
        if table.filter_text:
            self._set_filter("")
        elif self.history:
            view, key = self.history.pop()
            table.scope, table.scope_label = None, ""
            self._rebuild(self.view)
            self._switch(view)
            if key is not None:
                self.table().select_key(key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        if key is None:
            return
        self.drill_down(key)

    def drill_down(self, key: str) -> None:
        """Enter: node -> its executors -> its session -> that session's tasks."""
        here = self.view
        if here == "nodes":
            executors = self.table("executors")
            executors.scope = lambda eid: (e := self.model.executors.get(eid)) is not None and e.node == key
            executors.scope_label = f"node {printable(key)}"
            self.history.append((here, key))
            self._rebuild("executors")
            self._switch("executors")
        elif here == "executors":
            executor = self.model.executors.get(key)
            if executor is None or executor.session_id is None:
                self.notify("this executor serves no session", timeout=3)
                return
            self.history.append((here, key))
            self._switch("sessions")
            self.table().select_key(executor.session_id)
        elif here == "sessions":
            self.history.append((here, key))
            self.show_tasks(key)

    def show_tasks(self, session_id: str) -> None:
        tasks = self.table("tasks")
        self.model.watch_session(session_id)
        tasks.scope_label = f"session {printable(session_id)}"
        tasks.clear()
        tasks.shown.clear()
        self.tables.task_page_no = 0
        self.feed.watch_session(session_id)
        self._switch("tasks")

    def action_close_session(self) -> None:
        session_id = self._selected_session()
        if session_id is None:
            self.notify("select a session first (Sessions view)", timeout=3)
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.feed.close_session(session_id)
                self.say(f"closing session {session_id}")

        question = f"Close session {printable(session_id)}? Its pending tasks are cancelled."
        self.push_screen(ConfirmScreen(question), answer)

    def action_drain(self, drained: bool) -> None:
        name = self.table("nodes").current_key() if self.view == "nodes" else None
        if name is None:
            self.notify("select a node first (Nodes view)", timeout=3)
            return
        verb = "Drain" if drained else "Undrain"
        effect = "it gets no new executors; running ones keep working" if drained else "it takes new executors again"

        def answer(yes: bool | None) -> None:
            if yes:
                self.feed.drain_node(name, drained)
                self.say(f"{verb.lower()}ing node {name}")

        self.push_screen(ConfirmScreen(f"{verb} node {printable(name)}? ({effect})"), answer)

    def _selected_session(self) -> str | None:
        if self.view == "sessions":
            return self.table().current_key()
        if self.view == "tasks":
            return self.model.tasks_session
        return None

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from palette_commands(self)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="flame-tui",
        description="A live dashboard of a Flame cluster: nodes, executors, sessions, tasks and events, "
        "pushed by the session manager (SubscribeCluster). Press ? inside for the keys.",
    )
    parser.add_argument("--endpoint", help="session manager frontend (default: FLAME_ENDPOINT, then the config file)")
    parser.add_argument("--config", help="flame config file to read the endpoint from")
    parser.add_argument("--interval", type=float, default=0.25, help="most frequent update, seconds (default 0.25)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not (math.isfinite(args.interval) and 0 < args.interval <= 60):
        parser.error(f"--interval: {args.interval} is not a number of seconds in (0, 60]")
    try:
        feed = LiveFeed(args.endpoint, config=args.config, interval=args.interval)
    except FlameError as exc:
        print(f"flame-tui: error: {printable(exc.message)}", file=sys.stderr)
        return 2
    FlameTui(feed).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
