"""A child process writing a snapshot, as the session manager's loop sees it: a pipe to watch
and a result to collect.

The child is a compactor (`flamed.storage.compaction.spawn_compactor`): a separate process that
shares no memory with the session manager. Rules:
- it reports on a pipe: `ok <payload bytes>` or `error <reason>`; a child that died without a
  word (killed, out of memory) is an error too;
- one child at a time; the parent polls its pipe (`fd`, readable once the child is done) and
  calls `result()`, or `wait()` to block for it, or `kill()` to stop it (at stop, before
  re-reading the directory: the parent writes or re-reads itself then).
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass


@dataclass(frozen=True)
class SnapshotResult:
    seq: int
    #: payload bytes written; None when it failed
    size: int | None
    #: why it failed ("" when it did not)
    error: str


class BackgroundSnapshot:
    """A child writing the snapshot of record `seq`."""

    def __init__(self, pid: int, fd: int, seq: int) -> None:
        self.pid = pid
        self.fd = fd
        self.seq = seq
        self._result: SnapshotResult | None = None

    def result(self) -> SnapshotResult:
        """Read the child's report and reap it (blocks until the child has exited; call when
        `fd` is readable and it returns at once)."""
        if self._result is not None:
            return self._result
        chunks = []
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except InterruptedError:
                continue
            if not chunk:
                break
            chunks.append(chunk)
        os.close(self.fd)
        _, status = os.waitpid(self.pid, 0)
        report = b"".join(chunks).decode(errors="replace").strip()
        if report.startswith("ok ") and status == 0:
            self._result = SnapshotResult(self.seq, int(report[3:]), "")
        elif report.startswith("error "):
            self._result = SnapshotResult(self.seq, None, report[6:])
        else:
            how = os.waitstatus_to_exitcode(status)
            what = f"killed by signal {-how}" if how < 0 else f"exit status {how}"
            self._result = SnapshotResult(self.seq, None, f"the snapshot process ended without a report ({what})")
        return self._result

    def wait(self) -> SnapshotResult:
        """Block until the child is done."""
        return self.result()

    def kill(self) -> SnapshotResult:
        """Stop the child (SIGKILL: it writes nothing that a crash could not leave) and reap it."""
        if self._result is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        return self.result()
