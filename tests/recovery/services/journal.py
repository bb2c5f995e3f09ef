"""A test service that records every invocation to a journal file (its first argument).

Input `<seconds>` (e.g. b"3"): sleep that long, then return the input. Each invocation appends
`start <session> <task> <pid> <ppid> <executor> <unix time>` when it starts and `end ...` when it returns,
flushed and fsynced, so a test counts runs of a task from the journal (not from log text).
The ppid is the executor manager that started the instance, which names the node.
"""

from __future__ import annotations

import os
import sys
import time

from flamed.service import FlameService, SessionContext, TaskContext, run


class Journal(FlameService):
    def __init__(self, path: str) -> None:
        self.path = path

    def note(self, event: str, context: TaskContext) -> None:
        line = (
            f"{event} {context.session_id} {context.task_id} {os.getpid()} {os.getppid()} "
            f"{os.environ.get('FLAME_EXECUTOR_ID', '-')} {time.time():.3f}\n"
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
        self.note("start", context)
        time.sleep(float(context.input or b"0"))
        self.note("end", context)
        return context.input

    def on_session_leave(self) -> None:
        pass


if __name__ == "__main__":
    run(Journal(sys.argv[1]))
