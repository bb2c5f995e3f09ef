"""A test service: sleeps `float(input)` seconds, then returns the input."""

from __future__ import annotations

import time

from flamed.service import FlameService, SessionContext, TaskContext, run


class Sleeper(FlameService):
    def on_session_enter(self, context: SessionContext) -> None:
        pass

    def on_session_leave(self) -> None:
        pass

    def on_task_invoke(self, context: TaskContext) -> bytes | None:
        time.sleep(float(context.input or b"0"))
        return context.input


if __name__ == "__main__":
    run(Sleeper())
