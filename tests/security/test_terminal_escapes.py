"""Finding 7: strings from the wire must not reach the operator's terminal raw.

A client registers an application whose description, labels, command, arguments, environment
and schema carry ESC/OSC/CSI sequences, C1 controls, CR/LF and bidi overrides; a worker whose
hostname and uname carry the same registers through a real executor manager. `flmctl list
-a/-n/-s`, `view -a/-n`, run as the operator would, must print them escaped; the session
manager must refuse a name with a trailing newline; flame-tui must show them escaped and never
read them as markup.

What would break: a table cell printed with `str()` (an OSC retitles the terminal, a CR/LF
forges a row), a name regex anchored with `$` (it matches before a trailing newline), a
DataTable `str` cell (Textual reads it as markup).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from flamed.client.text import is_printable, printable
from protocol import frontend as fe
from protocol.types import Event, Task, TaskState
from tests.support.daemons import Daemons
from tests.support.waiting import wait_for
from tests.tui.fake_cluster import WALL, Clock, node, session, snapshot
from tui.app import FlameTui
from tui.feed import Connected, FakeFeed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HOSTILE_HOST = Path(__file__).resolve().parent / "services" / "hostile_host.py"

OSC_TITLE = "\x1b]0;owned\x07"  # sets the window title
OSC_CLIPBOARD = "\x1b]52;c;cm0gLXJmIH4K\x07"  # writes the clipboard (OSC 52)
CSI_CLEAR = "\x1b[2J\x1b[H"
BIDI = "\u202egnp.exe\u202c"
FORGED_ROW = "\r\nflmping  Enabled  Host  -  00:00:00  /bin/true"

HOSTILE_SPEC = {
    "description": f"{OSC_TITLE}{CSI_CLEAR}nice app",
    "labels": [f"team{OSC_CLIPBOARD}", f"x{FORGED_ROW}", BIDI],
    "command": f"/bin/true\x9b31m{BIDI}",
    "arguments": [f"--a\x00\x7f{CSI_CLEAR}"],
    "environments": {"K\x1b[1m": f"v{OSC_TITLE}"},
    "working_directory": f"/srv/\x1b[5m{BIDI}",
    "url": f"https://example.com/\u2066{OSC_TITLE}",
    "schema": {"input": '{"type": "\\u001b]0;pwn\\u0007"}'},
}


def flmctl(d: Daemons, *args: str) -> str:
    """`flmctl ARGS` as the operator runs it; its exact stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "flamed.cli.flmctl", "--endpoint", d.frontend, *args],
        capture_output=True,
        env=d.env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def assert_terminal_safe(output: str, *, layout_tabs: bool = False) -> None:
    """No control character but our own line breaks (and, in `view`, our leading tabs)."""
    for line in output.split("\n"):
        body = line[1:] if layout_tabs and line.startswith("\t") else line
        assert is_printable(body), f"raw control character in {line!r}"


def start_hostile_worker(d: Daemons) -> None:
    """A real executor manager on a host whose hostname and uname carry escape sequences."""
    log = (d.dir / "evil.log").open("ab")
    d.procs["evil"] = subprocess.Popen(
        [
            sys.executable,
            str(HOSTILE_HOST),
            "executor-manager",
            "--backend",
            d.backend,
            "--node-name",
            "evil",
            "--slots",
            "1",
            "--runtime-dir",
            str(d.dir / "rt-evil"),
            "--config",
            str(d.config),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=d.env,
        cwd=d.dir,
    )
    log.close()


def test_flmctl_prints_wire_strings_escaped(daemons: Daemons) -> None:
    """`list -a`, `view -a`, `list -n`, `view -n` and `list -s` print ESC, OSC, CSI, C1, CR/LF
    and bidi characters as visible escapes, one table row per entity."""
    daemons.start_session_manager()
    start_hostile_worker(daemons)
    daemons.wait_ready_nodes(1)
    with daemons.client() as client:
        reply = client.call({"type": "RegisterApplication", "name": "hostile", "spec": HOSTILE_SPEC})
        assert reply["type"] == "ApplicationReply", reply
        reply = client.call({"type": "CreateSession", "session_id": "s1", "spec": {"application": "hostile"}})
        assert reply["type"] == "SessionReply", reply
        applications = len(client.call({"type": "ListApplications"})["applications"])

    listing = flmctl(daemons, "list", "-a")
    assert_terminal_safe(listing)
    assert len(listing.strip().split("\n")) == 1 + applications  # a header, then one row each
    assert "\\x1b]52;c;" in listing
    assert "\\r\\nflmping" in listing
    assert "\\u202egnp.exe" in listing

    view = flmctl(daemons, "view", "-a", "hostile")
    assert_terminal_safe(view, layout_tabs=True)
    assert "\\x1b]0;owned\\x07\\x1b[2J" in view
    assert "\\x9b31m" in view
    assert "\\x00\\x7f" in view
    assert "\\u2066" in view
    assert "Input: \\x1b]0;pwn\\x07" in view

    nodes = flmctl(daemons, "list", "-n")
    assert_terminal_safe(nodes)
    assert len(nodes.strip().split("\n")) == 2
    assert "FORGED-ROW" in nodes
    assert "\\x1b]0;owned\\x07host" in nodes
    assert "linux\\u202etxt.exe" in nodes

    assert_terminal_safe(flmctl(daemons, "view", "-n", "evil"), layout_tabs=True)
    assert_terminal_safe(flmctl(daemons, "list", "-s"))


@pytest.mark.parametrize("name", ["evil\n", "evil\r", "evil\x1b[2J", "evil\u202e", "evil\n\n"])
def test_names_with_a_trailing_newline_or_controls_are_refused(daemons: Daemons, name: str) -> None:
    """A `$`-anchored name regex accepts "evil\\n", whose row in `list -s` breaks the table;
    every name (session, application) must match the whole of the pattern."""
    daemons.start_session_manager()
    with daemons.client() as client:
        created = client.call({"type": "CreateSession", "session_id": name, "spec": {"application": "flmping"}})
        assert created["type"] == "Error", created
        assert created["code"] == "InvalidArgument", created
        registered = client.call({"type": "RegisterApplication", "name": name, "spec": {"command": "/bin/true"}})
        assert registered["type"] == "Error", registered
        assert registered["code"] == "InvalidArgument", registered
        sessions = client.call({"type": "ListSessions"})["sessions"]
        assert [s["id"] for s in sessions] == []
    assert_terminal_safe(flmctl(daemons, "list", "-s"))


def test_tui_shows_wire_strings_escaped_and_never_as_markup() -> None:
    """Pilot: a session manager (or a task's instance, through its failure message) that sends
    escape sequences and Rich markup gets them shown literally, escaped, in every view."""
    hostile_node = node(f"n1[b]x[/b]{CSI_CLEAR}")
    tasks = [
        Task(
            id=1,
            session_id="s1",
            state=TaskState.Failed,
            creation_time=WALL - 1000,
            message=f"[reverse]boom[/reverse]{CSI_CLEAR}{BIDI}",
            events=[Event(code=3, message="failed")],
        )
    ]
    event = fe.ClusterEvent(time=WALL, kind="task\x1b[1m", subject="[b]s1[/b]", message=f"Failed {OSC_CLIPBOARD}")
    cluster = snapshot()
    cluster.nodes = [hostile_node]
    cluster.sessions = [session("s1", app="[red]app[/red]\x1b]0;t\x07")]
    cluster.events = [event]
    feed = FakeFeed()
    app = FlameTui(feed, clock=Clock(), wall_ms=lambda: WALL, tick=0)

    def screen_text(view: str) -> str:
        table = app.table(view)
        return "\n".join(table.render_line(y).text for y in range(table.size.height))

    async def main() -> None:
        async with app.run_test(size=(160, 30)) as pilot:
            app.apply_feed(Connected("fake://cluster", f"flame{OSC_TITLE}"))
            app.apply_feed(cluster)
            await pilot.pause()
            nodes = screen_text("nodes")
            assert "n1[b]x[/b]\\x1b[2J" in nodes, nodes
            await pilot.press("3")
            await pilot.pause()
            sessions = screen_text("sessions")
            assert "[red]app[/red]\\x1b]0;t\\x07" in sessions, sessions
            app.show_tasks("s1")
            app.apply_feed(fe.TaskUpdates(tasks=tasks))
            await pilot.pause()
            shown = screen_text("tasks")
            assert "[reverse]boom[/reverse]\\x1b[2J" in shown, shown
            await pilot.press("5")
            await pilot.pause()
            events = screen_text("events")
            assert "task\\x1b[1m" in events, events
            assert "[b]s1[/b]" in events, events
            assert "\\x1b]52;c;" in events, events
            status = str(app.query_one("#status").render())
            assert printable(OSC_TITLE) in status
            for text in (nodes, sessions, shown, events, status):
                assert is_printable(text.replace("\n", "")), text

    asyncio.run(main())
    wait_for("the app to stop its feed", lambda: feed.stopped, timeout=5)


def test_printable_escapes_every_terminal_control_and_nothing_else() -> None:
    """Would break if one class of dangerous character (C0, DEL, C1, line separators, bidi
    controls) were let through, or if ordinary text (accents, CJK, emoji, backslashes) were
    mangled."""
    dangerous = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]]
    dangerous += ["\u061c", "\u200e", "\u200f", "\u2028", "\u2029"]
    dangerous += [chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]]
    for char in dangerous:
        escaped = printable(f"a{char}b")
        assert escaped.startswith("a\\"), repr(char)
        assert escaped.endswith("b"), repr(char)
        assert is_printable(escaped), repr(char)
    assert printable("\x1b]0;t\x07\r\n\t") == "\\x1b]0;t\\x07\\r\\n\\t"
    assert printable("\u202e\x9b") == "\\u202e\\x9b"
    ordinary = "café 東京 🔥 C:\\temp [b]x[/b] a-b_c.d ~!@#$%^&*()"
    assert printable(ordinary) is ordinary
