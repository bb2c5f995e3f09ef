"""Strings from the wire made safe to print on a terminal.

Whatever a peer put into an application's description, a label, a command, a node's hostname
or a task's message reaches `flmctl`, `flmping` and `flame-tui`. Printed raw, an ESC starts a
control sequence (recolour the screen, set the window title, OSC 52 writes the clipboard), a CR
or LF forges lines of a table, and a Unicode bidi override reorders what the operator reads.
`printable` replaces each such character with a visible escape (`\\x1b`, `\\n`, `\\u202e`) and
leaves everything else, non-ASCII letters included, as it was.

Rules: call it on every wire string at the point where it becomes output (a table cell, a
detail line, a notification), after which the text is ours; never on our own layout (the tabs
and newlines of `flmctl view`). Backslashes are kept as they are: the escapes exist to make the
terminal safe, not to round-trip. Pure and cheap (a string with nothing to escape is returned
as it is), so it is fine on hot paths such as the dashboard's rows.
"""

from __future__ import annotations

import re

#: C0 controls (ESC, CR, LF, TAB, BEL, ...), DEL and the C1 controls 0x80-0x9f (0x9b is a
#: one-byte CSI on some terminals), the line and paragraph separators, and the bidi controls:
#: marks (U+061C, U+200E, U+200F), embeddings and overrides (U+202A-U+202E) and isolates
#: (U+2066-U+2069).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every terminal control character (C0, DEL, C1, line separators, bidi
    controls) replaced by a visible escape; the same object when there is none."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape, text)


def is_printable(text: str) -> bool:
    """True when `printable(text)` would change nothing (for tests and callers that refuse)."""
    return _UNSAFE.search(text) is None
