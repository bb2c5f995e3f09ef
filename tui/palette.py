"""The command palette (ctrl+p): the dashboard's key actions, by name, after Textual's own.

Each command names its key and calls the same `action_*` method as the key, so the palette can
do nothing the keys cannot; actions that change the cluster still ask first. The app is seen
here only as the `Actions` it offers (so this module does not import the app's).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from textual.app import SystemCommand

from tui.render import TITLES, VIEWS


class Actions(Protocol):
    """The key actions of the dashboard (`FlameTui` has them)."""

    def action_show(self, view: str) -> None: ...
    def action_filter(self) -> None: ...
    def action_sort(self) -> None: ...
    def action_pause(self) -> None: ...
    def action_close_session(self) -> None: ...
    def action_drain(self, drained: bool) -> None: ...
    def action_help(self) -> None: ...


def palette_commands(app: Actions) -> Iterator[SystemCommand]:
    for index, view in enumerate(VIEWS, 1):
        yield SystemCommand(
            f"Show {TITLES[view]}",
            f"switch to the {TITLES[view]} view (key {index})",
            lambda view=view: app.action_show(view),
        )
    yield SystemCommand("Filter", "filter the current view (/)", app.action_filter)
    yield SystemCommand("Sort", "sort the current view by the next column (s)", app.action_sort)
    yield SystemCommand("Pause or resume", "freeze the tables; data keeps arriving (p)", app.action_pause)
    yield SystemCommand(
        "Close session", "close the selected session, after a confirmation (c)", app.action_close_session
    )
    yield SystemCommand(
        "Drain node", "cordon the selected node, after a confirmation (d)", lambda: app.action_drain(True)
    )
    yield SystemCommand(
        "Undrain node", "uncordon the selected node, after a confirmation (u)", lambda: app.action_drain(False)
    )
    yield SystemCommand("Help", "every key (?)", app.action_help)
