"""File primitives with the durability rules spelled out: full writes, directory fsync, and
atomic replacement of a file (tmp -> fsync -> rename -> fsync dir).

Rules: a file reached through a rename is complete, because its bytes were fsynced before the
rename and the rename was made durable by fsyncing the directory. Functions here raise
`OSError` unchanged; callers wrap it into a `StorageError` that says what they were doing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

FILE_MODE = 0o600
TMP_SUFFIX = ".tmp"


def write_fully(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`, continuing after short writes (a short write is how a file
    size limit or a nearly full disk shows itself before the error)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(path: Path) -> None:
    """Make the directory entries of `path` (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, chunks: Sequence[bytes], *, sync_every: int = 0) -> None:
    """Create or replace `path` with the concatenation of `chunks`, all or nothing.

    Writes `<path>.tmp`, fsyncs it, renames it over `path` and fsyncs the directory. On failure
    the temporary file is removed and `path` is untouched. With `sync_every`, the data is also
    flushed (fdatasync) every that many bytes, so that a big file never has much dirty data at
    once: another process's fsync on the same disk (the log's) would otherwise wait for all of
    it to reach the disk.
    """
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        for chunk in chunks:
            if not sync_every:
                write_fully(fd, chunk)
                continue
            view = memoryview(chunk)
            for start in range(0, len(view), sync_every):
                write_fully(fd, view[start : start + sync_every])  # type: ignore[arg-type]
                os.fdatasync(fd)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        tmp.rename(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def unused_name(path: Path, suffix: str) -> Path:
    """`<path><suffix>`, or `<path>.<n><suffix>` if that exists already (never overwrite evidence)."""
    candidate = path.with_name(path.name + suffix)
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}{suffix}")
    return candidate
