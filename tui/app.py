"""`flame-tui`: a live dashboard of a Flame cluster (Textual).

The app is thin: a `Feed` (the session manager's `SubscribeCluster` push, or a fake in tests)
delivers messages, `ClusterModel` folds them into dicts by id and says what changed, and each
`LiveTable` updates only those rows. Views: Nodes, Executors, Sessions, Tasks (of the selected
session, via `WatchTasks`) and Events; a header with totals, throughput and connection status.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import ContentSwitcher, DataTable, Footer, Input, Sparkline, Static

from protocol import frontend as fe
from tui import views as v
from tui.feed import Connected, Disconnected, Feed, FeedItem, LiveFeed
from tui.model import Changes, ClusterModel
from tui.table import Cells, LiveTable

TASK_ROWS = 1000  # a bigger session shows its first tasks and the failed or retried ones
VIEWS = ("nodes", "executors", "sessions", "tasks", "events")
TITLES = {"nodes": "Nodes", "executors": "Executors", "sessions": "Sessions", "tasks": "Tasks", "events": "Events"}

HELP = """\
[b]flame-tui[/b]: live state of a Flame cluster

  1-5, tab, shift+tab   Nodes, Executors, Sessions, Tasks, Events
  arrows, enter         move; drill down: node -> its executors -> session -> tasks
  esc                   back out of a drill-down, clear the filter
  /                     filter the current view (any text of the row)
  s                     sort: next column ascending, descending, then the next
  p                     pause / resume updates (data keeps arriving)
  c                     close the selected session (asks first)
  d, u                  drain (cordon) / undrain the selected node (asks first)
  ctrl+p                command palette (the same actions)
  ?                     this help;  q  quit

States are words and colours: Ready/Unknown/NotReady (node), Connected/Draining/Closed (link),
Idle/Binding/Bound/Unbinding/Releasing (executor), Pending/Running/Succeed/Failed/Cancelled.
"Heard" is the time since the node's last message; it turns yellow at 5 s, red at 15 s.
A drained node keeps its executors but gets no new ones ("drained" in the Link column);
"stopping" there means its executor manager is draining to stop (SIGTERM).

press any key to close"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    #help { width: auto; max-width: 100; border: round $accent; padding: 0 1; background: $surface; }
    """

    def compose(self) -> ComposeResult:
        yield Static(HELP, id="help")

    def on_key(self) -> None:
        self.dismiss()


class ConfirmScreen(ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    #confirm { width: auto; border: round $error; padding: 0 1; background: $surface; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [("y", "answer(True)", "yes"), ("n,escape", "answer(False)", "no")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Static(f"{self.question}\n\n[b]y[/b] yes   [b]n[/b] no", id="confirm")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


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
        self._event_seq = 0

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        with Vertical(id="main"):
            yield Static("", id="status")
            with Horizontal(id="top"):
                yield Static("", id="summary")
                yield Sparkline([0.0], id="spark")
            yield Input(placeholder="filter: any text of the row; enter keeps it, esc clears", id="filter")
            with ContentSwitcher(initial="nodes", id="views"):
                yield LiveTable(v.NODE_COLUMNS, id="nodes")
                yield LiveTable(v.EXECUTOR_COLUMNS, id="executors")
                yield LiveTable(v.SESSION_COLUMNS, id="sessions")
                yield LiveTable(v.TASK_COLUMNS, id="tasks")
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
        elif isinstance(item, fe.Error):
            self.notify(f"{item.code}: {item.message}", severity="error", timeout=6)
        elif isinstance(item, fe.SessionReply):
            self.notify(f"session {item.session.id}: {item.session.state}")
        elif isinstance(item, fe.NodeReply):
            self.notify(f"node {item.node.name}: {'drained' if item.node.drained else 'not drained'}")
        else:
            changes = self.model.apply(item, now)
            if isinstance(item, fe.ClusterSnapshot | fe.ClusterUpdates) and self.connected is None:
                self.connected = Connected(self.feed.endpoint)
            self._merge(changes)

    def _merge(self, changes: Changes) -> None:
        p = self._pending
        p.nodes |= changes.nodes
        p.executors |= changes.executors
        p.sessions |= changes.sessions
        p.tasks |= changes.tasks
        p.events.extend(changes.events)
        p.reset = p.reset or changes.reset

    def _take_pending(self) -> Changes:
        changes, self._pending = self._pending, Changes()
        return changes

    def _ctx(self) -> v.Context:
        now = self.clock()
        return v.Context(now, self.wall_ms(), lambda name: self.model.heartbeat_age(name, now))

    def _render(self, changes: Changes) -> None:
        if not changes:
            return
        ctx = self._ctx()
        m = self.model
        with self.batch_update():
            if changes.reset:
                self.table("nodes").rebuild(self._rows(m.nodes, v.node_row, ctx))
                self.table("executors").rebuild(self._rows(m.executors, v.executor_row, ctx))
                self.table("sessions").rebuild(self._rows(m.sessions, v.session_row, ctx))
                self._rebuild_events()
            else:
                self.table("nodes").sync(self._some(m.nodes, changes.nodes, v.node_row, ctx))
                self.table("executors").sync(self._some(m.executors, changes.executors, v.executor_row, ctx))
                self.table("sessions").sync(self._some(m.sessions, changes.sessions, v.session_row, ctx))
                self._add_events(changes.events)
            if changes.tasks:
                self._sync_tasks(changes.tasks, ctx)

    @staticmethod
    def _rows(items: dict[Any, Any], row: Callable[[Any, v.Context], Cells], ctx: v.Context) -> list[tuple[str, Cells]]:
        return [(str(k), row(item, ctx)) for k, item in items.items()]

    @staticmethod
    def _some(
        items: dict[str, Any], keys: Iterable[str], row: Callable[[Any, v.Context], Cells], ctx: v.Context
    ) -> Iterator[tuple[str, Cells | None]]:
        for key in keys:
            item = items.get(key)
            yield key, None if item is None else row(item, ctx)

    def _sync_tasks(self, changed: set[int] | None, ctx: v.Context) -> None:
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

    def _rebuild_events(self) -> None:
        table = self.table("events")
        table.clear()
        table.shown.clear()
        self._add_events(list(self.model.events))

    def _add_events(self, events: list[fe.ClusterEvent]) -> None:
        if not events:
            return
        table = self.table("events")
        ctx = self._ctx()
        rows = []
        for event in events:
            self._event_seq += 1
            rows.append((f"e{self._event_seq}", v.event_row(event, ctx)))
        table.sync(rows)
        while len(table.shown) > len(self.model.events):
            oldest = next(iter(table.shown))
            table.sync([(oldest, None)])
        if self.view != "events" or table.cursor_row >= table.row_count - len(rows) - 1:
            table.move_cursor(row=table.row_count - 1)

    # ------------------------------------------------------------------ clock

    def refresh_clock(self) -> None:
        """Every second: heartbeat ages and session ages move without messages."""
        if not self.is_running:
            return
        if not self.paused:
            ctx = self._ctx()
            self.table("nodes").sync(self._rows(self.model.nodes, v.node_row, ctx))
            if self.view == "sessions":
                self.table("sessions").sync(self._rows(self.model.sessions, v.session_row, ctx))
        self.refresh_header()

    def refresh_header(self) -> None:
        status = self.query_one("#status", Static)
        now = self.clock()
        age = self.model.data_age(now)
        if self.connected is not None:
            status.remove_class("bad")
            cluster = self.connected.cluster or "cluster"
            line = f"{cluster} at {self.feed.endpoint}: connected"
        else:
            status.add_class("bad")
            since = "no data yet" if age is None else f"data is {v._duration(age)} old"
            line = f"DISCONNECTED ({self.disconnect_reason}); {since}; reconnecting to {self.feed.endpoint}"
        self.screen.set_class(self.connected is None and age is not None, "stale")
        if self.paused:
            line += "  [PAUSED: p resumes]"
        table = self.table()
        crumbs = " > ".join(TITLES[view] for view, _ in self.history)
        extra = [f"view {crumbs + ' > ' if crumbs else ''}{TITLES[self.view]}"]
        if table.scope_label:
            extra.append(table.scope_label)
        if self.view == "tasks" and len(self.model.tasks) > TASK_ROWS:
            extra.append(f"first {TASK_ROWS} of {len(self.model.tasks)} tasks + failed/retried")
        if table.filter_text:
            extra.append(f"filter '{table.filter_text}'")
        if table.sort_column is not None:
            extra.append(f"sort {table.spec[table.sort_column].label}{' desc' if table.sort_reverse else ''}")
        status.update(Text(line + "  |  " + ", ".join(extra)))
        self.query_one("#summary", Static).update(self._summary())
        spark = self.query_one("#spark", Sparkline)
        spark.data = list(self.model.throughput) or [0.0]

    def _summary(self) -> Text:
        totals = self.model.totals()
        stats = self.model.stats
        rate = self.model.throughput[-1] if self.model.throughput else 0.0

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
        self._rebuild(self.view)
        self.refresh_header()

    def _rebuild(self, view: str) -> None:
        ctx, m, table = self._ctx(), self.model, self.table(view)
        if view == "events":
            self._rebuild_events()
            return
        source: dict[str, Any]
        row: Callable[[Any, v.Context], Cells]
        if view == "nodes":
            source, row = m.nodes, v.node_row
        elif view == "executors":
            source, row = m.executors, v.executor_row
        elif view == "sessions":
            source, row = m.sessions, v.session_row
        else:
            self._sync_tasks(None, ctx)
            return
        table.rebuild(self._rows(source, row, ctx))

    def action_sort(self) -> None:
        label = self.table().cycle_sort()
        self.notify(f"sorted by {label}", timeout=2)
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
            executors.scope_label = f"node {key}"
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
        tasks.scope_label = f"session {session_id}"
        tasks.clear()
        tasks.shown.clear()
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
                self.notify(f"closing session {session_id}")

        self.push_screen(ConfirmScreen(f"Close session {session_id}? Its pending tasks are cancelled."), answer)

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
                self.notify(f"{verb.lower()}ing node {name}")

        self.push_screen(ConfirmScreen(f"{verb} node {name}? ({effect})"), answer)

    def _selected_session(self) -> str | None:
        if self.view == "sessions":
            return self.table().current_key()
        if self.view == "tasks":
            return self.model.tasks_session
        return None

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for index, view in enumerate(VIEWS, 1):
            yield SystemCommand(
                f"Show {TITLES[view]}",
                f"switch to the {TITLES[view]} view (key {index})",
                lambda view=view: self.action_show(view),
            )
        yield SystemCommand("Filter", "filter the current view (/)", self.action_filter)
        yield SystemCommand("Sort", "sort the current view by the next column (s)", self.action_sort)
        yield SystemCommand("Pause or resume", "freeze the tables; data keeps arriving (p)", self.action_pause)
        yield SystemCommand(
            "Close session", "close the selected session, after a confirmation (c)", self.action_close_session
        )
        yield SystemCommand(
            "Drain node", "cordon the selected node, after a confirmation (d)", lambda: self.action_drain(True)
        )
        yield SystemCommand(
            "Undrain node", "uncordon the selected node, after a confirmation (u)", lambda: self.action_drain(False)
        )
        yield SystemCommand("Help", "every key (?)", self.action_help)


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
    from flamed.config import client_endpoint

    endpoint = client_endpoint(args.endpoint, args.config)
    FlameTui(LiveFeed(endpoint, interval=args.interval)).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
