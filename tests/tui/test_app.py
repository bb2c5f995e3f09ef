"""flame-tui driven by Pilot against a fake feed: no sockets, a fixed clock.

Would break if rows were not keyed by id (updates would add rows), if a key binding or the
drill-down chain stopped working, or if losing the session manager were not shown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
import pytest
from textual.pilot import Pilot

from protocol import frontend as fe
from protocol.types import NodeState
from tests.tui.fake_cluster import WALL, Clock, node, session, snapshot, tasks
from tui.app import FlameTui
from tui.feed import Connected, Disconnected, FakeFeed
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
    return [str(table.coordinate_to_cell_key((row, 0)).row_key.value) for row in range(table.row_count)]


def status(app: FlameTui) -> str:
    return str(app.query_one("#status").render())


def test_snapshot_fills_every_view_and_updates_change_rows_in_place() -> None:
    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        assert keys(app, "nodes") == ["node-a", "node-b"]
        assert cell(app, "nodes", "node-a", "state") == "Ready"
        assert sorted(keys(app, "sessions")) == ["batch-1", "old-3", "render-7"]
        assert len(keys(app, "executors")) == 3 and app.table("events").row_count == 2
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
        assert "old-3" not in keys(app, "sessions") and "e1b" not in keys(app, "executors")

    run(scenario)


def test_number_keys_and_tab_switch_views() -> None:
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
    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        await pilot.press("enter")  # node-a
        assert app.view == "executors"
        assert sorted(keys(app, "executors")) == ["e1a", "e2a"]
        assert "node node-a" in status(app)
        await pilot.press("enter")  # e1a -> its session
        assert app.view == "sessions"
        assert app.table("sessions").current_key() == "batch-1"
        await pilot.press("enter")
        assert app.view == "tasks" and feed.watched == ["batch-1"]
        app.apply_feed(tasks())
        await pilot.pause()
        assert sorted(keys(app, "tasks"), key=int) == ["10", "11", "12"]
        assert cell(app, "tasks", "11", "attempt") == "2" and cell(app, "tasks", "11", "retries") == "1"
        assert cell(app, "tasks", "10", "duration") == "0.5s"
        await pilot.press("escape")
        assert app.view == "sessions"
        await pilot.press("escape", "escape")
        assert app.view == "nodes"
        assert len(keys(app, "executors")) == 3  # the node scope is gone

    run(scenario)


def test_disconnected_banner_says_how_old_the_data_is_and_reconnect_clears_it() -> None:
    async def scenario(app: FlameTui, pilot: Pilot[None], feed: FakeFeed, clock: Clock) -> None:
        assert "connected" in status(app) and "DISCONNECTED" not in status(app)
        clock.t += 12
        app.apply_feed(Disconnected("fake://cluster", "no message for 3.5s"))
        await pilot.pause()
        text = status(app)
        assert "DISCONNECTED" in text and "12s old" in text and "reconnecting" in text
        assert app.screen.has_class("stale")
        assert cell(app, "nodes", "node-a", "state") == "Ready"  # last data kept, not blanked
        app.apply_feed(Connected("fake://cluster", "flame"))
        app.apply_feed(snapshot())
        await pilot.pause()
        assert "DISCONNECTED" not in status(app) and not app.screen.has_class("stale")

    run(scenario)


def test_heartbeat_age_grows_between_pushes_and_help_and_close_session_confirm() -> None:
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
