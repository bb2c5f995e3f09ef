"""The chaos test service: works for the time its input says, fails on purpose when told, and
writes every task start to its node's journal.

The journal (path in $FLAME_CHAOS_JOURNAL, one file per node; the executor manager's
environment reaches its instances) gets one line per event, appended, flushed and fsynced
before the work starts, so a start is on disk even if the instance is killed a moment later:

    start <session> <task id> <seq> <node> <executor> <pid> <unix time>
    end   <session> <task id> <seq> <node> <executor> <pid> <unix time>

`end` is written when the work is done, before the result is returned (also for a failure on
purpose). The runner counts runs of a task from these lines, never from log text.
"""

from __future__ import annotations

import os
import time

from flamed.service import FlameService, SessionContext, TaskContext, run
from tests.chaos.payload import decode, expected_output, failure_message


class ChaosJournal(FlameService):
    def __init__(self) -> None:
        self.path = os.environ.get("FLAME_CHAOS_JOURNAL", "chaos-journal")
        self.node = os.environ.get("FLAME_CHAOS_NODE", "-")
        self.executor = os.environ.get("FLAME_EXECUTOR_ID", "-")

    def note(self, event: str, context: TaskContext, seq: int) -> None:
        line = (
            f"{event} {context.session_id} {context.task_id} {seq} {self.node} {self.executor} "
            f"{os.getpid()} {time.time():.6f}\n"
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def on_session_enter(self, context: SessionContext) -> None:
        pass

    def on_task_invoke(self, context: TaskContext) -> bytes | None:
        payload = decode(context.input)
        if payload is None or context.input is None:
            raise ValueError(f"not a chaos task input: {context.input!r}")
        self.note("start", context, payload.seq)
        time.sleep(payload.ms / 1000)
        self.note("end", context, payload.seq)
        if payload.fail:
            raise RuntimeError(failure_message(payload.seq))
        return expected_output(context.input)

    def on_session_leave(self) -> None:
        pass


if __name__ == "__main__":
    run(ChaosJournal())
