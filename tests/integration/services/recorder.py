"""A test service: echoes `<common data>:<input>`, fails on b"fail", dies on b"die", and writes
`enter <session>` / `leave` lines to the journal file given as its first argument."""

from __future__ import annotations

import os
import sys

from flamed.service import FlameService, SessionContext, TaskContext, run


class Recorder(FlameService):
    def __init__(self, journal: str) -> None:
        self.journal = journal
        self.common = b""

    def note(self, line: str) -> None:
        with open(self.journal, "a") as f:
            f.write(line + "\n")

    def on_session_enter(self, context: SessionContext) -> None:
        self.common = context.common_data() or b""
        self.note(f"enter {context.session_id}")

    def on_task_invoke(self, context: TaskContext) -> bytes | None:
        if context.input == b"fail":
            raise ValueError("the service refused input 'fail'")
        if context.input == b"die":
            os._exit(3)
        return self.common + b":" + (context.input or b"")

    def on_session_leave(self) -> None:
        self.note("leave")


if __name__ == "__main__":
    run(Recorder(sys.argv[1]))
