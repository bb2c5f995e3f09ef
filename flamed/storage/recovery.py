"""Reading the state directory at start-up: newest valid snapshot, then the log after it.

Rules, in the order they are applied:
1. Leftover `*.tmp` files are deleted: a crash between writing a temporary file and renaming it
   means the rename never happened, so the old state is the valid one.
2. The newest snapshot that verifies is used; damaged ones are renamed to `*.bad` (see
   `snapshot.py`). The log is kept back to the previous snapshot so that this fallback works.
3. Every segment is checked in full before anything is replayed. A bad header, damage that is
   not a torn tail, damage of any kind in a segment that is not the last one, and a gap in the
   record numbers not covered by the snapshot all raise `CorruptLogError` naming the file and
   offset. A segment is fsynced before the next one is created, so only the last can be torn.
4. A torn tail of the last segment is cut off: its bytes are first saved durably in
   `<segment>.broken` (a fresh name if one exists: evidence is never overwritten), then the
   segment is truncated and fsynced.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from flamed.storage.durable import TMP_SUFFIX, atomic_write, fsync_dir, unused_name
from flamed.storage.errors import CorruptLogError, StorageError
from flamed.storage.framing import (
    Scan,
    check_segment_header,
    iter_records,
    parse_segment_name,
    scan_frames,
)
from flamed.storage.snapshot import LoadedSnapshot, load_newest_snapshot

log = logging.getLogger("flamed.storage")

HOW_TO_RECOVER = (
    "the session manager will not start on a damaged log; move the state directory aside and "
    "start empty, or restore it from a backup (the damaged files are left as they are)"
)


@dataclass(frozen=True)
class SegmentInfo:
    path: Path
    first_seq: int
    count: int
    #: Size of the file after recovery (torn tail removed).
    size: int

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1


@dataclass
class Recovery:
    """What start-up found. Consume `records` before the first `Storage.append`."""

    #: The newest valid snapshot's payload, or None when the log starts from record 1.
    snapshot: bytes | None
    #: Number of the last record the snapshot covers (0 without a snapshot).
    snapshot_seq: int
    #: Payloads of the log records after the snapshot, in order (read lazily from the segments).
    records: Iterator[bytes]
    #: How many payloads `records` yields.
    records_replayed: int
    #: Number of the last record stored (snapshot or log).
    last_seq: int
    torn_tail_truncated: bool = False
    torn_bytes: int = 0
    broken_file: Path | None = None
    snapshots_set_aside: list[Path] = field(default_factory=list)
    tmp_files_removed: list[Path] = field(default_factory=list)


@dataclass
class DirectoryState:
    """The checked contents of a state directory, ready to replay and to append to."""

    snapshot: LoadedSnapshot | None
    segments: list[SegmentInfo]
    recovery: Recovery


def remove_tmp_files(state_dir: Path) -> list[Path]:
    removed = [path for path in state_dir.iterdir() if path.name.endswith(TMP_SUFFIX)]
    for path in removed:
        path.unlink()
        log.warning("removed %s, left by a crash before its rename", path)
    if removed:
        fsync_dir(state_dir)
    return removed


def list_segments(state_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in state_dir.iterdir():
        seq = parse_segment_name(path.name)
        if seq is not None:
            found.append((seq, path))
    return sorted(found)


def read_state_dir(state_dir: Path) -> DirectoryState:
    """Check the whole directory, repair a torn tail, and describe what to replay.

    Raises `CorruptLogError` on damage that is not a torn tail, `StorageError` if a file cannot
    be read or the repair cannot be written.
    """
    try:
        removed = remove_tmp_files(state_dir)
        snapshot, set_aside = load_newest_snapshot(state_dir)
    except OSError as exc:
        raise StorageError(f"cannot read snapshots in {state_dir}: {exc}") from exc
    snapshot_seq = snapshot.seq if snapshot else 0
    paths = list_segments(state_dir)
    segments: list[SegmentInfo] = []
    broken: tuple[Path, int] | None = None
    expected = 1
    for index, (first_seq, path) in enumerate(paths):
        last = index == len(paths) - 1
        _check_continuity(path, first_seq, expected, snapshot_seq, segments)
        data, scan = read_segment(path, first_seq, f"; {HOW_TO_RECOVER}")
        if scan.damage is not None:
            if not (last and scan.damage.torn):
                where = "" if last else " (not the last segment, so this cannot be a torn write)"
                raise CorruptLogError(
                    f"log segment {path}, offset {scan.damage.offset}: {scan.damage.what}{where}; {HOW_TO_RECOVER}"
                )
            broken = _cut_torn_tail(path, data, scan.end, scan.damage.what)
        segments.append(SegmentInfo(path, first_seq, scan.count, scan.end))
        expected = first_seq + scan.count
    if not segments and snapshot_seq == 0 and set_aside:
        raise CorruptLogError(
            f"every snapshot in {state_dir} is damaged ({', '.join(map(str, set_aside))}) and no log "
            f"reaches back to record 1; {HOW_TO_RECOVER}"
        )
    last_seq = max(snapshot_seq, expected - 1)
    replay = [s for s in segments if s.count and s.last_seq > snapshot_seq]
    count = sum(s.last_seq - max(s.first_seq - 1, snapshot_seq) for s in replay)
    recovery = Recovery(
        snapshot=snapshot.payload if snapshot else None,
        snapshot_seq=snapshot_seq,
        records=segment_records(replay, snapshot_seq),
        records_replayed=count,
        last_seq=last_seq,
        snapshots_set_aside=set_aside,
        tmp_files_removed=removed,
    )
    if broken is not None:
        recovery.torn_tail_truncated = True
        recovery.broken_file, recovery.torn_bytes = broken
    return DirectoryState(snapshot, segments, recovery)


def _check_continuity(path: Path, first_seq: int, expected: int, snapshot_seq: int, done: list[SegmentInfo]) -> None:
    """Segments must number their records without gaps, except a gap the snapshot covers
    (records the snapshot holds whose segment was already deleted, or lost from a tail)."""
    if first_seq == expected or (expected < first_seq <= snapshot_seq + 1):
        return
    if not done and first_seq <= snapshot_seq + 1:
        return  # the oldest kept segment may start anywhere inside the snapshot
    if first_seq > expected:
        after = f"after {done[-1].path.name}" if done else "at the start of the log"
        raise CorruptLogError(
            f"log segment {path}, offset 0: records {expected}..{first_seq - 1} are missing {after} "
            f"(the snapshot covers up to record {snapshot_seq}); {HOW_TO_RECOVER}"
        )
    raise CorruptLogError(
        f"log segment {path}, offset 0: starts at record {first_seq} but {done[-1].path.name} already "
        f"holds records up to {expected - 1}; {HOW_TO_RECOVER}"
    )


def _cut_torn_tail(path: Path, data: bytes, end: int, what: str) -> tuple[Path, int]:
    """Save `data[end:]` in a fresh `.broken` file, then truncate the segment to `end`."""
    broken = unused_name(path, ".broken")
    try:
        atomic_write(broken, [data[end:]])
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, end)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot repair the torn tail of {path} at offset {end}: {exc.strerror}") from exc
    log.warning(
        "log segment %s has a torn tail at offset %d (%s): %d bytes moved to %s and cut off",
        path,
        end,
        what,
        len(data) - end,
        broken,
    )
    return broken, len(data) - end


def read_segment(path: Path, first_seq: int, advice: str = "") -> tuple[bytes, Scan]:
    """The bytes of segment `path` (whose first record is `first_seq`), its header checked and
    its frames scanned (damage is reported in the scan, not raised). Raises `StorageError` if
    it cannot be read, `CorruptLogError` (ending with `advice`) if its header is wrong."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read log segment {path}: {exc.strerror}") from exc
    problem = check_segment_header(data, first_seq)
    if problem is not None:
        raise CorruptLogError(f"log segment {path}, offset 0: {problem}{advice}")
    return data, scan_frames(data, first_seq)


def segment_records(segments: list[SegmentInfo], after_seq: int, upto: int | None = None) -> Iterator[bytes]:
    """The records of `segments` after record `after_seq` (up to record `upto` if given), each
    segment read again as it is reached (only one is in memory at a time)."""
    for segment in segments:
        try:
            data = segment.path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read log segment {segment.path}: {exc.strerror}") from exc
        seq = segment.first_seq
        for record in iter_records(data, segment.size):
            if upto is not None and seq > upto:
                return
            if seq > after_seq:
                yield record
            seq += 1
