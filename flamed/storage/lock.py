"""The state directory lock: one session manager per state directory.

An exclusive `fcntl.flock` on `<state_dir>/LOCK`, held for the life of the `Storage`. The lock
belongs to the open file, so the kernel drops it when the process dies (even by SIGKILL): a
stale LOCK file never blocks a restart. The holder writes its pid into the file so that the
refusal can name it. flock locks are per open file description, so a second `Storage.open` on
the same directory is refused even inside the same process.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from flamed.storage.durable import FILE_MODE
from flamed.storage.errors import LockedError, StorageError

LOCK_NAME = "LOCK"


class StateLock:
    """A held lock on a state directory; `release()` is idempotent."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        """Take the lock or raise `LockedError` naming the holder's pid."""
        path = state_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise LockedError(
                f"state directory {state_dir} is in use by {who} (lock {path}); "
                "stop that session manager first, or give this one another --state-dir"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock {path}: {exc.strerror}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is a courtesy for the refusal message; the flock is what protects
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
