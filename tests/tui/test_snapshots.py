"""SVG snapshots of the main views at 80x24 (pytest-textual-snapshot).

Would break on any visible change of layout, colours or words; refresh deliberately with
`pytest tests/tui --snapshot-update` and look at the diff report.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.pilot import Pilot

from protocol import frontend as fe
from protocol.types import NodeState
from tests.tui.fake_cluster import WALL, Clock, node, snapshot
from tui.app import FlameTui
from tui.feed import Connected, Disconnected, FakeFeed

pytest.importorskip("pytest_textual_snapshot")
pytestmark = pytest.mark.timeout(60)


def make_app(clock: Clock) -> FlameTui:
    return FlameTui(FakeFeed("ipc:///run/flame/frontend"), clock=clock, wall_ms=lambda: WALL, tick=0)


def loaded(*extra: object) -> Callable[[Pilot[None]], object]:
    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, FlameTui)
        app.apply_feed(Connected(app.feed.endpoint, "flame"))
        app.apply_feed(snapshot())
        for item in extra:
            app.apply_feed(item)  # type: ignore[arg-type]  # extra feed items come in as object
        await pilot.pause()

    return run_before


def test_nodes_view_with_an_unknown_node(snap_compare: Callable[..., bool]) -> None:
    """Breaks if the Nodes view with an Unknown node no longer looks as in its SVG snapshot."""
    update = fe.ClusterUpdates(nodes=[node("node-b", NodeState.Unknown, age=6.2, bound=1)])
    assert snap_compare(make_app(Clock()), terminal_size=(80, 24), run_before=loaded(update))


def test_sessions_view(snap_compare: Callable[..., bool]) -> None:
    """Breaks if the Sessions view no longer looks as in its SVG snapshot."""
    assert snap_compare(make_app(Clock()), terminal_size=(80, 24), press=["3"], run_before=loaded())


def test_disconnected_banner(snap_compare: Callable[..., bool]) -> None:
    """Breaks if the banner shown after the feed is lost no longer looks as in its SVG snapshot."""
    clock = Clock()
    app = make_app(clock)

    async def run_before(pilot: Pilot[None]) -> None:
        await loaded()(pilot)  # type: ignore[misc]  # loaded() returns Pilot's run_before callable, typed loosely
        clock.t += 42
        app.apply_feed(Disconnected(app.feed.endpoint, "no message for 3.5s"))
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
