"""Snapshots written by a child process, so that the daemon's loop does not wait for them.

Why fork: a snapshot of a million tasks takes the better part of a second to serialise and
write, and the state it serialises is plain Python objects that the loop keeps changing. A
forked child gets a copy-on-write image of the state at one instant for the price of copying
page tables (a few milliseconds for a few hundred MB), serialises and writes it while the
parent goes on serving heartbeats and replies, and exits. The cost moves to memory: pages the
parent changes meanwhile, and those whose reference counts the child touches, are copied; at
worst the state's size again, for as long as the child runs.

Rules:
- the child only serialises (the `encode` callable it is given) and writes the file
  (`write_snapshot_file`: tmp -> fsync -> rename -> fsync dir); it does not log, touch a
  socket, run `atexit` handlers or collect cycles, and it leaves with `os._exit`;
- it reports on a pipe: `ok <payload bytes>` or `error <reason>`; a child that died without a
  word (killed, out of memory) is an error too;
- one child at a time; the parent polls its pipe (`fd`, readable once the child is done) and
  calls `result()`, or `wait()` to block for it (at stop, or before re-reading the directory).

Where `os.fork` does not exist, `fork_snapshot` raises `OSError`; the caller writes in process.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flamed.storage.snapshot import write_snapshot_file

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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
        report = b"".join(chunks).decode(errors="replace")
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


def fork_snapshot(state_dir: Path, seq: int, encode: Callable[[], bytes]) -> BackgroundSnapshot:
    """Fork a child that writes `encode()` as the snapshot of record `seq` in `state_dir` (the
    log must be durable up to `seq` already: `Storage.begin_snapshot`). Raises OSError if the
    process cannot be forked."""
    if not hasattr(os, "fork"):
        raise OSError("this platform cannot fork")
    read_fd, write_fd = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork in a process with threads (ZeroMQ's I/O threads):
            # the child here touches no lock another thread may hold (no logging, no sockets).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:  # pragma: no cover - the child; its work shows in the file and the report
        _child(read_fd, write_fd, state_dir, seq, encode)
    os.close(write_fd)
    return BackgroundSnapshot(pid, read_fd, seq)


def _child(
    read_fd: int, write_fd: int, state_dir: Path, seq: int, encode: Callable[[], bytes]
) -> None:  # pragma: no cover
    code = 1
    try:
        os.close(read_fd)
        gc.disable()  # a collection would touch (and so copy) every tracked object
        signal.set_wakeup_fd(-1)
        for signum in _SIGNALS:
            signal.signal(signum, signal.SIG_DFL)  # the parent's handlers write to its loop
        payload = encode()
        write_snapshot_file(state_dir, seq, payload)
        os.write(write_fd, f"ok {len(payload)}".encode())
        code = 0
    except BaseException as exc:
        with contextlib.suppress(BaseException):  # nothing left to report with
            os.write(write_fd, f"error {type(exc).__name__}: {exc}".encode()[:4000])
    finally:
        os._exit(code)
