"""A test service whose `on_session_enter` always raises: its instances can never serve."""

from __future__ import annotations

from flamed.service import FlameService, SessionContext, TaskContext, run


class Refuses(FlameService):
    def on_session_enter(self, context: SessionContext) -> None:
        raise RuntimeError("the model file is missing")

    def on_task_invoke(self, context: TaskContext) -> bytes | None:
        return context.input

    def on_session_leave(self) -> None:
        pass


if __name__ == "__main__":
    run(Refuses())
