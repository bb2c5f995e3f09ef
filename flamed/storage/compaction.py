"""Compaction: snapshot N+1 built from snapshot N plus the closed log segments, by a separate
process that shares no memory with the session manager.

Why not fork: a forked child's cost grows with the parent (page tables copied at the fork,
copy-on-write faults in the parent afterwards: 40-47 ms of loop stall at 1,000,000 tasks), and
it serialises the live state, so the parent's own objects are touched. Here the session manager
only closes the active segment (`Storage.begin_snapshot`: an fsync it usually owes anyway and a
new file) and starts a fresh interpreter with `posix_spawn` (a vfork: nothing of the parent is
copied). The compactor reads the files, never the session manager's memory, rebuilding the state
with the same code as a restart (`read_for_compaction` here, `state_from` of the session
manager), and writes the snapshot with `write_snapshot_file` (tmp -> fsync -> rename -> fsync
dir). The session manager then deletes what the snapshot covers (`Storage.finish_snapshot`).

Crash safety, step by step:
- the files a compactor reads are immutable: closed segments (fsynced before the next one was
  created; recovery only ever cuts the tail of the *last* segment, which a compactor does not
  read: it stops at record `upto`, the end of a closed segment) and a verified snapshot;
- a snapshot covering records 1..N is the state after record N whoever wrote it (invariant I8:
  replay and apply are the same code), so a snapshot that lands late, even after the session
  manager that asked for it died and another one started, is correct;
- a compactor killed mid-write leaves `snapshot-N.snap.tmp`: never read, removed by the
  session manager when it sees the failure, or by recovery at the next start;
- the session manager killed while a compactor runs: the compactor notices its parent is gone
  before it renames (it gives up; if it already renamed, see above); a new session manager
  deleting files the compactor still wanted to read makes the compactor fail, nothing else;
- what it deletes after its snapshot (older snapshots, segments the older kept snapshot
  covers) no recovery can need, whoever runs: a restart uses the newest valid snapshot or the
  one before it with the log after that;
- two compactors never run at once: each holds an exclusive flock on `COMPACT.LOCK` for its
  whole run (a second one fails at once and says so); the session manager starts one at a
  time, and segments are deleted only after its compactor reported.

The report is a line on the compactor's stdout (a pipe): `ok <payload bytes>` or
`error <reason>`; a compactor that died without a word is an error too (`BackgroundSnapshot`).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import sys
from pathlib import Path

from flamed.storage.background import BackgroundSnapshot
from flamed.storage.durable import FILE_MODE, TMP_SUFFIX, fsync_dir
from flamed.storage.errors import CorruptLogError, StorageError
from flamed.storage.recovery import Recovery, SegmentInfo, list_segments, read_segment, segment_records
from flamed.storage.snapshot import (
    SNAPSHOT_HEADER_SIZE,
    LoadedSnapshot,
    check_snapshot,
    list_snapshots,
    snapshot_name,
)

COMPACT_LOCK_NAME = "COMPACT.LOCK"
#: The module a compactor runs (`python -m ...`): it needs the core, which storage does not import.
COMPACTOR_MODULE = "flamed.session_manager.compactor"
#: How much lower than the session manager a compactor runs (nice increment).
NICENESS = 10


class CompactionLock:
    """The exclusive flock of a running compactor on `<state_dir>/COMPACT.LOCK` (dropped by the
    kernel when the process dies, even by SIGKILL)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> CompactionLock:
        """Take the lock or raise `StorageError` (another compactor holds it)."""
        path = state_dir / COMPACT_LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise StorageError(f"cannot open {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                raise StorageError(f"another compactor is running in {state_dir} (it holds {path})") from None
            raise StorageError(f"cannot lock {path}: {exc.strerror}") from exc
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _newest_snapshot_upto(state_dir: Path, upto: int) -> LoadedSnapshot | None:
    """The newest snapshot covering at most `upto` that verifies (read-only: a damaged one is
    skipped, not set aside; that is recovery's job, under the state lock)."""
    for seq, path in reversed(list_snapshots(state_dir)):
        if seq > upto:
            continue
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # deleted meanwhile by a session manager's pruning
        if check_snapshot(data, seq) is None:
            return LoadedSnapshot(seq, path, data[SNAPSHOT_HEADER_SIZE:])
    return None


def read_for_compaction(state_dir: Path, upto: int) -> Recovery:
    """The newest snapshot at or before record `upto` and the records after it up to `upto`,
    from the closed segments, without changing a file. Raises `CorruptLogError` if those
    records are not all there, intact (`upto` must be the end of a closed segment)."""
    snapshot = _newest_snapshot_upto(state_dir, upto)
    snapshot_seq = snapshot.seq if snapshot else 0
    needed: list[SegmentInfo] = []
    expected = snapshot_seq + 1
    for first_seq, path in list_segments(state_dir):
        if first_seq > upto:
            break
        _, scan = read_segment(path, first_seq)
        last_seq = first_seq + scan.count - 1
        if last_seq <= snapshot_seq:
            continue
        if first_seq > expected:
            raise CorruptLogError(f"records {expected}..{first_seq - 1} are missing before {path.name}")
        if scan.damage is not None and last_seq < upto:
            raise CorruptLogError(f"log segment {path}, offset {scan.damage.offset}: {scan.damage.what}")
        needed.append(SegmentInfo(path, first_seq, scan.count, scan.end))
        expected = last_seq + 1
    if expected <= upto:
        raise CorruptLogError(f"the log in {state_dir} ends at record {expected - 1}, before record {upto}")
    count = upto - snapshot_seq
    return Recovery(
        snapshot=snapshot.payload if snapshot else None,
        snapshot_seq=snapshot_seq,
        records=segment_records(needed, snapshot_seq, upto),
        records_replayed=count,
        last_seq=upto,
    )


def spawn_compactor(state_dir: Path, upto: int, *, module: str = COMPACTOR_MODULE) -> BackgroundSnapshot:
    """Start a compactor writing the snapshot of record `upto` (the log must be durable and the
    segment holding `upto` closed: `Storage.begin_snapshot`). `posix_spawn`: the parent's memory
    is neither copied nor shared. Raises OSError if the process cannot be started."""
    read_fd, write_fd = os.pipe()
    # The priority is lowered first thing, before the imports: the compactor's CPU must not
    # delay the session manager's loop on a busy machine.
    bootstrap = f"import os, runpy, sys; os.nice({NICENESS}); runpy.run_module({module!r}, run_name='__main__')"
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-c", bootstrap, str(state_dir), str(upto)],
            os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, write_fd, 1), (os.POSIX_SPAWN_CLOSE, read_fd)],
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return BackgroundSnapshot(pid, read_fd, upto)


def prune_covered(state_dir: Path, kept: int) -> list[Path]:
    """Delete snapshots beyond the newest `kept` and the segments the oldest kept one covers
    (the rule of `Storage._prune`), so that the session manager's loop does not pay for
    unlinking them; returns what was deleted. Only segments followed by another one can go
    (their last record is known, and the last segment is the one being written). Raises
    OSError."""
    snapshots = list_snapshots(state_dir)
    if len(snapshots) < kept:
        return []
    oldest_kept = snapshots[-kept][0]
    doomed = [path for _, path in snapshots[:-kept]]
    segments = list_segments(state_dir)
    for (_, path), (next_first, _) in itertools.pairwise(segments):
        if next_first - 1 <= oldest_kept:
            doomed.append(path)
    for path in doomed:
        path.unlink(missing_ok=True)
    if doomed:
        fsync_dir(state_dir)
    return doomed


def remove_leftover(state_dir: Path, seq: int) -> None:
    """After a compactor failed: its temporary file, if it left one (best effort)."""
    with contextlib.suppress(OSError):
        (state_dir / (snapshot_name(seq) + TMP_SUFFIX)).unlink(missing_ok=True)
