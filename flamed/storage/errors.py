"""The storage error tree (a branch of Flame's, whose root is protocol.errors.FlameBaseError).

    StorageError            a write, fsync, rename or delete in the state directory failed;
     |                      the message names the operation, the file and the OS error
     +-- CorruptLogError    start-up found damage that is not a torn tail (names file, offset,
     |                      what is wrong, and how to recover); the daemon must not start
     +-- LockedError        another process holds the state directory (names its pid)

A `StorageError` raised by `Storage.commit` means the batch was *not* stored: the log on disk is
exactly as it was before the batch, and later commits may succeed once the cause is gone.
"""

from __future__ import annotations

from protocol.errors import FlameBaseError


class StorageError(FlameBaseError):
    """A write, fsync or rename in the state directory failed; the message says what and where."""


class CorruptLogError(StorageError):
    """Damage before the tail of the log, or missing history: start-up must stop."""


class LockedError(StorageError):
    """Another process holds the lock on the state directory."""
