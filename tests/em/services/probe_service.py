"""A test service. Input decides what a task does:

b"boom"  -> raises ValueError("boom input")  (the task fails, the instance goes on)
b"crash" -> os._exit(3)                      (the instance dies mid-task)
b"hang"  -> sleeps for a minute
other    -> echoes the input back
"""

from __future__ import annotations

import os
import time

from flamed.service import FlameService, SessionContext, TaskContext, run


class ProbeService(FlameService):
    def on_session_enter(self, context: SessionContext) -> None:
        if context.common_data() == b"refuse":
            raise RuntimeError("refusing this session")

    def on_task_invoke(self, context: TaskContext) -> bytes | None:
        if context.input == b"boom":
            raise ValueError("boom input")
        if context.input == b"crash":
            os._exit(3)
        if context.input == b"hang":
            time.sleep(60)
        return context.input

    def on_session_leave(self) -> None:
        pass


if __name__ == "__main__":
    run(ProbeService())
