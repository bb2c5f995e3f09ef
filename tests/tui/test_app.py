"""flame-tui driven by Pilot against a fake feed: no sockets, a fixed clock.

Would break if rows were not keyed by id (updates would add rows), if a key binding or the
drill-down chain stopped working, if losing the session manager were not shown, or if the
dashboard again counted queued tasks as running, hid tasks past the first 1,000, aged closed
sessions by how long they were open, or drew a sparkline out of no data (issue 18, finding 8).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
import pytest
from textual.coordinate import Coordinate
from textual.pilot import Pilot

from protocol import frontend as fe
from protocol.types import NodeState, Task, TaskState
from tests.tui.fake_cluster import WALL, Clock, executor, node, session, snapshot, tasks
from tui.app import FlameTui, main
from tui.feed import Connected, Disconnected, FakeFeed
from tui.header import BARS, spark_text
from tui.model import TASK_PHASES
from tui.table import LiveTable

pytestmark = pytest.mark.timeout(60)


def run(
    scenario: Callable[[FlameTui, Pilot[None], FakeFeed, Clock], Awaitable[None]], size: tuple[int, int] = (100, 30)
) -> None:
    feed, clock = FakeFeed(), Clock()
    app = FlameTui(feed, clock=clock, wall_ms=lambda: WALL, tick=0)

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            app.apply_feed(Connected("fake://cluster", "flame"))
            app.apply_feed(snapshot())
            await pilot.pause()
            await scenario(app, pilot, feed, clock)

    asyncio.run(main())


def cell(app: FlameTui, view: str, key: str, column: str) -> str:
    value = app.table(view).get_cell(key, column)
    return getattr(value, "plain", str(value))


def keys(app: FlameTui, view: str) -> list[str]:
    table = app.table(view)
    return [str(table.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value) for row in range(table.row_count)]


def status(app: FlameTui) -> str:
    return str(app.query_one("#status").render())


def test_snapshot_fills_every_view_and_updates_change_rows_in_place() -> None:
    """Breaks if a cluster snapshot leaves a view empty, or an update adds a duplicate row instead of changing
    the row in place."""

    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        assert keys(app, "nodes") == ["node-a", "node-b"]
        assert cell(app, "nodes", "node-a", "state") == "Ready"
        assert sorted(keys(app, "sessions")) == ["batch-1", "old-3", "render-7"]
        assert len(keys(app, "executors")) == 3
        assert app.table("events").row_count == 2
        app.apply_feed(
            fe.ClusterUpdates(
                nodes=[node("node-b", NodeState.Unknown, age=6.0)],
                sessions=[session("batch-1", succeed=990, running=2)],
            )
        )
        await pilot.pause()
        assert keys(app, "nodes") == ["node-a", "node-b"]  # same rows, updated in place
        assert cell(app, "nodes", "node-b", "state") == "Unknown"
        assert cell(app, "nodes", "node-b", "conn") == "Draining"
        assert cell(app, "sessions", "batch-1", "succeed") == "990"
        app.apply_feed(fe.ClusterUpdates(removed_sessions=["old-3"], removed_executors=["e1b"]))
        await pilot.pause()
        assert "old-3" not in keys(app, "sessions")
        assert "e1b" not in keys(app, "executors")

    run(scenario)


def test_number_keys_and_tab_switch_views() -> None:
    """Breaks if the number keys or tab / shift+tab do not switch to (and focus) the view they name."""

    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        for key, view in (("2", "executors"), ("3", "sessions"), ("5", "events"), ("1", "nodes")):
            await pilot.press(key)
            assert app.view == view
        await pilot.press("tab")
        assert app.view == "executors"
        await pilot.press("shift+tab", "shift+tab")
        assert app.view == "events"
        assert app.focused is app.table("events")

    run(scenario)


def test_filter_narrows_the_view_and_escape_clears_it() -> None:
    """Breaks if the / filter does not narrow the rows, an update brings a filtered-out row back, or escape
    does not clear the filter."""

    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        await pilot.press("3", "slash", *"render")
        assert keys(app, "sessions") == ["render-7"]
        await pilot.press("enter")
        assert app.focused is app.table("sessions")
        assert "filter 'render'" in status(app)
        # An update to a filtered-out row does not bring it back.
        app.apply_feed(fe.ClusterUpdates(sessions=[session("batch-1", succeed=999)]))
        await pilot.pause()
        assert keys(app, "sessions") == ["render-7"]
        await pilot.press("escape")
        assert sorted(keys(app, "sessions")) == ["batch-1", "old-3", "render-7"]

    run(scenario)


def test_sort_cycles_columns_and_keeps_new_rows_in_order() -> None:
    """Breaks if s does not cycle the sort (ascending, descending, next column) or rows added later are not put
    in sorted order."""

    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        await pilot.press("3", "s")
        assert keys(app, "sessions") == ["batch-1", "old-3", "render-7"]
        await pilot.press("s")
        assert keys(app, "sessions") == ["render-7", "old-3", "batch-1"]
        app.apply_feed(fe.ClusterUpdates(sessions=[session("zeta-0"), session("aaa-9")]))
        await pilot.pause()
        assert keys(app, "sessions") == ["zeta-0", "render-7", "old-3", "batch-1", "aaa-9"]
        await pilot.press("s")  # the next column (App), ascending
        assert keys(app, "sessions")[-1] == "render-7"

    run(scenario)


def test_pause_freezes_the_tables_and_resume_catches_up() -> None:
    """Breaks if updates change the tables while paused, or resuming does not show what arrived meanwhile."""

    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        await pilot.press("p")
        assert "PAUSED" in status(app)
        app.apply_feed(
            fe.ClusterUpdates(nodes=[node("node-a", NodeState.Unknown, age=9.0)], sessions=[session("new-1")])
        )
        await pilot.pause()
        assert cell(app, "nodes", "node-a", "state") == "Ready"
        assert "new-1" not in keys(app, "sessions")
        await pilot.press("p")
        assert cell(app, "nodes", "node-a", "state") == "Unknown"
        assert "new-1" in keys(app, "sessions")
        assert "PAUSED" not in status(app)

    run(scenario)


def test_enter_drills_from_node_to_executors_to_session_to_tasks_and_escape_goes_back() -> None:
    """Breaks if enter does not drill node -> executors -> session -> tasks (watching that session), or escape
    does not walk back and drop the scope."""

    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        await pilot.press("enter")  # node-a
        assert app.view == "executors"
        assert sorted(keys(app, "executors")) == ["e1a", "e2a"]
        assert "node node-a" in status(app)
        await pilot.press("enter")  # e1a -> its session
        assert app.view == "sessions"
        assert app.table("sessions").current_key() == "batch-1"
        await pilot.press("enter")
        assert app.view == "tasks"
        assert feed.watched == ["batch-1"]
        app.apply_feed(tasks())
        await pilot.pause()
        assert sorted(keys(app, "tasks"), key=int) == ["10", "11", "12"]
        assert cell(app, "tasks", "11", "attempt") == "2"
        assert cell(app, "tasks", "11", "retries") == "1"
        assert cell(app, "tasks", "10", "duration") == "0.5s"
        await pilot.press("escape")
        assert app.view == "sessions"
        await pilot.press("escape", "escape")
        assert app.view == "nodes"
        assert len(keys(app, "executors")) == 3  # the node scope is gone

    run(scenario)


def test_disconnected_banner_says_how_old_the_data_is_and_reconnect_clears_it() -> None:
    """Breaks if a lost feed blanks the data or does not say how old it is, or a reconnect leaves the banner
    up."""

    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        assert "connected" in status(app)
        assert "DISCONNECTED" not in status(app)
        clock.t += 12
        app.apply_feed(Disconnected("fake://cluster", "no message for 3.5s"))
        await pilot.pause()
        text = status(app)
        assert "DISCONNECTED" in text
        assert "12s old" in text
        assert "reconnecting" in text
        assert app.screen.has_class("stale")
        assert cell(app, "nodes", "node-a", "state") == "Ready"  # last data kept, not blanked
        app.apply_feed(Connected("fake://cluster", "flame"))
        app.apply_feed(snapshot())
        await pilot.pause()
        assert "DISCONNECTED" not in status(app)
        assert not app.screen.has_class("stale")

    run(scenario)


def test_heartbeat_age_grows_between_pushes_and_help_and_close_session_confirm() -> None:
    """Breaks if heartbeat ages freeze between pushes, help does not open, or closing a session does not ask
    first (n keeps it, y closes it)."""

    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        clock.t += 7
        app.refresh_clock()
        await pilot.pause()
        assert cell(app, "nodes", "node-a", "heartbeat") == "7.4s"
        await pilot.press("question_mark")
        assert "drill down" in str(app.screen.query_one("#help").render())
        await pilot.press("x")
        await pilot.press("3", "c")
        await pilot.press("n")
        assert feed.closed == []
        await pilot.press("c", "y")
        assert feed.closed == ["batch-1"]

    run(scenario)


def test_event_log_appends_new_events_and_keeps_a_bounded_history() -> None:
    """Breaks if new events are not appended, or the event log grows past its 500-row bound."""

    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        event = fe.ClusterEvent(
            time=WALL, kind="node", subject="node-b", message="silent: Unknown (no message for 4.1s)"
        )
        app.apply_feed(fe.ClusterUpdates(events=[event]))
        await pilot.pause()
        table: LiveTable = app.table("events")
        assert table.row_count == 3
        many = [msgspec.structs.replace(event, subject=f"n{i}") for i in range(600)]
        app.apply_feed(fe.ClusterUpdates(events=many))
        await pilot.pause()
        assert table.row_count == 500

    run(scenario)


def test_drain_and_undrain_ask_first_and_the_link_column_says_drained() -> None:
    """Breaks if drain or undrain acts without a yes, or a drained node's link column does not say drained."""

    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        await pilot.press("d", "n")
        assert feed.drained == []
        await pilot.press("d", "y")
        assert feed.drained == [("node-a", True)]
        drained = msgspec.structs.replace(node("node-a"), drained=True)
        app.apply_feed(fe.ClusterUpdates(nodes=[drained]))
        await pilot.pause()
        assert cell(app, "nodes", "node-a", "conn") == "Connected drained"
        await pilot.press("u", "y")
        assert feed.drained[-1] == ("node-a", False)

    run(scenario)


def test_running_counts_one_task_per_executor_and_the_rest_as_queued() -> None:
    """Issue 18, finding 8: tasks dispatched ahead were counted as Running (260 Running on 4
    slots). e1a holds 11, 13 and 14 and runs 11: batch-1 has 2 running (11, 12) and 2 queued,
    in the Sessions view, the header and the Tasks view; when 11 finishes, 13 runs, even before
    the executor's new task list arrives (it comes with the cluster updates, later)."""

    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        assert cell(app, "sessions", "batch-1", "running") == "2"
        assert cell(app, "sessions", "batch-1", "queued") == "2"
        assert " 2 Queued 3 Run " in str(app.query_one("#summary").render())
        app.show_tasks("batch-1")
        queued = [Task(id=i, session_id="batch-1", state=TaskState.Running, executor_id="e1a") for i in (13, 14)]
        app.apply_feed(fe.TaskUpdates(tasks=[*tasks().tasks, *queued]))
        await pilot.pause()
        states = {k: cell(app, "tasks", k, "state") for k in ("11", "12", "13", "14")}
        assert states == {"11": "Running", "12": "Running", "13": "Queued", "14": "Queued"}, states
        done = msgspec.structs.replace(tasks().tasks[0], state=TaskState.Succeed, completion_time=WALL)
        app.apply_feed(fe.TaskUpdates(tasks=[done]))
        await pilot.pause()
        assert cell(app, "tasks", "13", "state") == "Running"
        assert cell(app, "tasks", "14", "state") == "Queued"
        app.apply_feed(fe.ClusterUpdates(executors=[executor("e1a", "node-a", "batch-1", [13, 14])]))
        await pilot.pause()
        assert cell(app, "tasks", "13", "state") == "Running"
        assert cell(app, "tasks", "14", "state") == "Queued"

    run(scenario)


def test_any_task_of_a_big_session_can_be_reached_by_page_state_or_filter() -> None:
    """Issue 18, finding 8: the Tasks view showed the first 1,000 tasks, so the running ones of
    a bigger session could not be found. Of 2,500 tasks, the running ones (2,401-2,404) are on
    page 3 (`]`), alone with `f` (Running), and found by the `/` filter; `[` goes back."""

    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        app.show_tasks("batch-1")
        many = [
            Task(id=i, session_id="batch-1", state=TaskState.Succeed if i <= 2400 else TaskState.Pending)
            for i in range(1, 2501)
        ]
        for i in range(2401, 2405):
            many[i - 1] = Task(id=i, session_id="batch-1", state=TaskState.Running, executor_id=f"x{i}")
        app.apply_feed(fe.TaskUpdates(tasks=many))
        await pilot.pause()
        assert len(keys(app, "tasks")) == 1000
        assert "page 1/3" in status(app)
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert "page 3/3" in status(app)
        assert "2403" in keys(app, "tasks")
        await pilot.press("left_square_bracket")
        assert "page 2/3" in status(app)
        assert "2403" not in keys(app, "tasks")
        await pilot.press("f")  # Running only
        assert sorted(keys(app, "tasks")) == ["2401", "2402", "2403", "2404"]
        assert "4 Running tasks" in status(app)
        assert "page" not in status(app).split("|")[1]
        await pilot.press(*["f"] * len(TASK_PHASES))  # every state again
        assert len(keys(app, "tasks")) == 1000
        await pilot.press("slash", *"2499", "enter")
        assert keys(app, "tasks") == ["2499"]

    run(scenario)


def test_session_age_is_the_time_since_it_was_created_even_when_closed() -> None:
    """Issue 18, finding 8: a session closed 0.4 s after it was created showed Age 0.4s for
    ever; old-3 was created 65 s ago."""

    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        assert cell(app, "sessions", "old-3", "age") == "65s"
        assert cell(app, "sessions", "batch-1", "age") == "65s"

    run(scenario)


def test_the_sparkline_is_empty_without_data_and_starts_at_zero() -> None:
    """Issue 18, finding 8: the throughput sparkline was solid when there was no data (one
    value or none). Without data it is blank and says so; a steady rate is a flat line of
    full bars, not noise between the smallest and the largest value; zero draws nothing."""

    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        shown = str(app.query_one("#spark").render())
        assert "no data yet" in shown, shown
        assert not set(shown) & set(BARS.strip()), shown
        blank = spark_text([], width=10, height=2).plain
        assert blank.splitlines()[0] == " " * 10
        assert "no data" in blank
        steady = spark_text([20.0, 20.0, 20.0], width=10, height=2).plain.splitlines()
        assert steady == ["       ███", "       ███"], steady
        idle = spark_text([0.0, 0.0], width=10, height=2).plain.splitlines()
        assert idle == [" " * 10] * 2, idle
        rising = spark_text([1.0, 8.0, 16.0], width=4, height=1).plain
        assert rising == " ▁▄█", rising

    run(scenario)


def test_a_bad_endpoint_is_one_line_and_exit_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    """flame-tui with an endpoint that is not one says so in one line (it was a ConfigError
    traceback) and starts no dashboard."""
    assert main(["--endpoint", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "'bogus' is not an endpoint" in err, err
