"""The dashboard's modal screens: the key help and the yes/no question asked before an action
that changes the cluster.

They hold words and keys only: a screen never talks to the feed. `ConfirmScreen` dismisses with
the answer and the caller's callback acts on it; its question may hold wire strings (a session
id, a node name), so it is shown as plain text, never read as markup.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]flame-tui[/b]: live state of a Flame cluster

  1-5, tab, shift+tab   Nodes, Executors, Sessions, Tasks, Events
  arrows, enter         move; drill down: node -> its executors -> session -> tasks
  esc                   back out of a drill-down, clear the filter
  /                     filter the current view (any text of the row; in Tasks: id, state,
                        executor or message, over every task of the session)
  f                     Tasks: only Running, Queued, Pending, Failed, Succeed, Cancelled, all
  [ ]                   Tasks: previous / next page (1,000 tasks a page, in id order)
  s                     sort: next column ascending, descending, then the next
  p                     pause / resume updates (data keeps arriving)
  c                     close the selected session (asks first)
  d, u                  drain (cordon) / undrain the selected node (asks first)
  ctrl+p                command palette (the same actions)
  ?                     this help;  q  quit

States are words and colours: Ready/Unknown/NotReady (node), Connected/Draining/Closed (link),
Idle/Binding/Bound/Unbinding/Releasing (executor), Pending/Queued/Running/Succeed/Failed/Cancelled.
Running is what runs now: at most one task per executor. The session manager sends executors
tasks ahead; those wait on their executor as "Queued" (Running to flmctl and the SDK).
"Pend" tasks are not on any executor yet. "Age" is the time since a session was created.
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
        yield Static(Text.assemble(self.question, "\n\n", ("y", "bold"), " yes   ", ("n", "bold"), " no"), id="confirm")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
