"""The segment being written: appends whole batches and undoes a batch that failed.

Rules: a segment file is created complete with its header (tmp -> fsync -> rename -> fsync
dir), so a header is never torn. A batch goes to the file in one `write()`; if the write fails
part way (disk full, EIO, file size limit), the file is truncated back to its size before the
batch, so the file always ends on a frame boundary that was already acknowledged or is about to
be. If even the truncation fails the segment is *poisoned*: nothing more is written to it and the
owner must restart, letting recovery decide what the disk holds.
"""

from __future__ import annotations

import os
from pathlib import Path

from flamed.storage.durable import atomic_write, write_fully
from flamed.storage.errors import StorageError
from flamed.storage.framing import SEGMENT_HEADER_SIZE, encode_segment_header, segment_name


class ActiveSegment:
    """An open segment file positioned at its end, holding records first_seq .. first_seq+count-1."""

    def __init__(self, path: Path, first_seq: int, count: int, size: int) -> None:
        self.path = path
        self.first_seq = first_seq
        self.count = count
        self.size = size
        #: Bytes written since the last fsync of this file.
        self.dirty = False
        self.poisoned: str | None = None
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise StorageError(f"cannot open log segment {path}: {exc.strerror}") from exc

    @classmethod
    def create(cls, state_dir: Path, first_seq: int) -> ActiveSegment:
        """Durably create an empty segment whose first record will be `first_seq`."""
        path = state_dir / segment_name(first_seq)
        try:
            atomic_write(path, [encode_segment_header(first_seq)])
        except OSError as exc:
            raise StorageError(f"cannot create log segment {path}: {exc.strerror}") from exc
        return cls(path, first_seq, 0, SEGMENT_HEADER_SIZE)

    @property
    def next_seq(self) -> int:
        return self.first_seq + self.count

    def append(self, data: bytes, records: int) -> None:
        """Write `data` (the frames of `records` records) or raise leaving the file as it was."""
        fd = self._require_fd()
        before = self.size
        try:
            write_fully(fd, data)
        except OSError as exc:
            self._undo(fd, before, exc)
            raise StorageError(
                f"cannot append {records} records to {self.path}: {exc.strerror}; the batch was not stored"
            ) from exc
        self.size += len(data)
        self.count += records
        self.dirty = True

    def fsync(self) -> None:
        """Make everything written so far durable; on failure the segment is poisoned, because
        after a failed fsync the kernel may have dropped pages we can no longer tell apart."""
        fd = self._require_fd()
        try:
            os.fsync(fd)
        except OSError as exc:
            self.poisoned = f"fsync of {self.path} failed: {exc.strerror}"
            raise StorageError(
                f"{self.poisoned}; what is on disk is now uncertain: restart the session manager"
            ) from exc
        self.dirty = False

    def discard_after(self, size: int, count: int) -> None:
        """Best effort, after a failed fsync: cut off the records written after `size`, so that
        a restart does not replay a batch whose requests are being failed. The segment stays
        poisoned."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        except OSError:
            return
        self.size = size
        self.count = count

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _undo(self, fd: int, before: int, cause: OSError) -> None:
        try:
            os.ftruncate(fd, before)
        except OSError as exc:
            self.poisoned = (
                f"cannot truncate {self.path} back to {before} bytes after a failed write "
                f"({cause.strerror}): {exc.strerror}"
            )
            raise StorageError(f"{self.poisoned}; restart the session manager") from exc

    def _require_fd(self) -> int:
        if self.poisoned is not None:
            raise StorageError(f"log segment unusable: {self.poisoned}; restart the session manager")
        if self._fd is None:
            raise StorageError(f"log segment {self.path} is closed")
        return self._fd
