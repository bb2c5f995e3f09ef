"""The session manager's durable state: a write-ahead log in segments plus snapshots.

When to call what:
- `Storage.open(state_dir, ...)` once at start-up: creates the directory (0700) or checks that
  only this user can write it (`flamed.private_dirs`: else `StorageError` with the command to
  run; a directory others may only read is tightened to 0700 and a warning logged), takes the
  lock, checks every file and repairs a torn tail (or raises `CorruptLogError`).
- `recover()` then gives the newest valid snapshot and the records after it; apply them all
  before the first `append`.
- Each loop turn: `append()` every record the turn produced, then `commit(now)` once, and only
  then send the replies that acknowledge them. `commit` writes the batch in one `write()` and
  fsyncs per policy: `always` (group commit: one fsync per turn), `interval` (at most one fsync
  per `fsync_interval`; call `commit` or `sync` by `next_fsync_deadline()` so it happens) or
  `never`.
- When `should_snapshot()`, serialise the state and give it to `write_snapshot()`.
- `close()` at exit.

Guarantees: a `StorageError` from `commit` means the batch is not in the log and the log on disk
equals the log before the batch (memory should stay as it was before the batch, too); later
commits may succeed once space returns. If the undo itself fails, or an fsync fails, the storage
refuses every later write and says to restart: recovery then decides from what is on disk.

Layout of the state directory: `LOCK`, `wal-<first seq>.log` segments, `snapshot-<seq>.snap`
snapshots, and repair evidence (`*.broken`, `*.bad`) that is never deleted automatically.
Snapshots are kept two deep, and segments back to the older of the two, so a snapshot that
fails its checksum falls back to the previous one plus the log.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Literal, get_args

from flamed.private_dirs import UnsafeDirectory, ensure_private_dir
from flamed.storage.durable import fsync_dir
from flamed.storage.errors import StorageError
from flamed.storage.framing import encode_frames
from flamed.storage.lock import StateLock
from flamed.storage.recovery import Recovery, SegmentInfo, read_state_dir
from flamed.storage.segments import ActiveSegment
from flamed.storage.snapshot import list_snapshots, write_snapshot_file

log = logging.getLogger("flamed.storage")

FsyncPolicy = Literal["always", "interval", "never"]
SNAPSHOTS_KEPT = 2
#: A snapshot is also due once the log written since the last one is this many times the size
#: of that snapshot (and at least `snapshot_log_bytes`): the state directory then stays
#: proportional to the state held (which retention bounds), not to the traffic, and the
#: snapshots' cost stays a fixed share of the writes, whatever the size of the records.
SNAPSHOT_LOG_RATIO = 1


class Storage:
    """An open state directory. Not thread-safe: one owner (the session manager's loop)."""

    def __init__(
        self,
        state_dir: Path,
        lock: StateLock,
        *,
        fsync: FsyncPolicy,
        fsync_interval: float,
        segment_bytes: int,
        snapshot_records: int,
        snapshot_log_bytes: int = 4 << 20,
    ) -> None:
        self.state_dir = state_dir
        self.fsync_policy: FsyncPolicy = fsync
        self.fsync_interval = fsync_interval
        self.segment_bytes = segment_bytes
        self.snapshot_records = snapshot_records
        self.snapshot_log_bytes = snapshot_log_bytes
        self._lock: StateLock | None = lock
        state = read_state_dir(state_dir)
        self._recovery = state.recovery
        self._snapshot_seq = state.recovery.snapshot_seq
        self._snapshot_bytes = len(state.snapshot.payload) if state.snapshot else 0
        self._closed: list[SegmentInfo] = state.segments[:-1]
        self._active = self._open_active(state.segments, state.recovery.last_seq)
        self._records_since_snapshot = state.recovery.last_seq - self._snapshot_seq
        #: bytes of log written since the last snapshot (at start: every segment, an upper bound)
        self._log_bytes_since_snapshot = sum(s.size for s in state.segments)
        self._batch: list[bytes] = []
        self._last_fsync = -math.inf
        self._counters = {"commits": 0, "commit_failures": 0, "fsyncs": 0, "snapshots": 0, "rotations": 0}
        self._records_written = 0
        self._bytes_written = 0
        self._last_fsync_latency = 0.0
        self._max_fsync_latency = 0.0
        #: time spent in fsync since start (with `fsyncs`, the mean latency over any window)
        self._fsync_seconds = 0.0
        self._prune()

    @classmethod
    def open(
        cls,
        state_dir: Path,
        *,
        fsync: FsyncPolicy = "always",
        fsync_interval: float = 1.0,
        segment_bytes: int = 64 << 20,
        snapshot_records: int = 100_000,
        snapshot_log_bytes: int = 4 << 20,
    ) -> Storage:
        """Open (creating if needed) the state directory; raises `LockedError` if another
        process holds it, `CorruptLogError` if its contents are damaged beyond a torn tail."""
        if fsync not in get_args(FsyncPolicy):
            raise ValueError(f"fsync policy must be one of {get_args(FsyncPolicy)}, not {fsync!r}")
        if fsync_interval <= 0 or segment_bytes <= 0 or snapshot_records <= 0:
            raise ValueError("fsync_interval, segment_bytes and snapshot_records must be positive")
        state_dir = Path(state_dir)
        try:
            tightened = ensure_private_dir(state_dir, "state directory", hint="or give another --state-dir")
        except UnsafeDirectory as exc:
            raise StorageError(str(exc)) from None
        if tightened:
            log.warning("%s", tightened)
        lock = StateLock.acquire(state_dir)
        try:
            return cls(
                state_dir,
                lock,
                fsync=fsync,
                fsync_interval=fsync_interval,
                segment_bytes=segment_bytes,
                snapshot_records=snapshot_records,
                snapshot_log_bytes=snapshot_log_bytes,
            )
        except BaseException:
            lock.release()
            raise

    def _open_active(self, segments: list[SegmentInfo], last_seq: int) -> ActiveSegment:
        if segments and segments[-1].first_seq + segments[-1].count == last_seq + 1:
            tail = segments[-1]
            return ActiveSegment(tail.path, tail.first_seq, tail.count, tail.size)
        # No log yet, or the log ends inside the snapshot: numbering resumes after the snapshot.
        self._closed = list(segments)
        return ActiveSegment.create(self.state_dir, last_seq + 1)

    # ------------------------------------------------------------------ reading

    def recover(self) -> Recovery:
        """What start-up found: the snapshot, the records after it, and the repairs made."""
        return self._recovery

    def recovered(self) -> None:
        """The state is rebuilt: let go of the snapshot's bytes (as big as the state on disk)."""
        self._recovery.snapshot = None

    # ------------------------------------------------------------------ writing

    @property
    def last_seq(self) -> int:
        """Number of the last committed record."""
        return self._active.next_seq - 1

    def append(self, payload: bytes) -> None:
        """Add a record to the current batch; nothing is written until `commit`."""
        if not payload:
            raise ValueError("an empty record cannot be stored")
        self._batch.append(payload)

    def commit(self, now: float) -> None:
        """Write the batch in one write and fsync per policy; `now` is the monotonic clock.

        Raises `StorageError` if the batch could not be stored; the log is then as it was
        before the batch, and the batch is dropped (the caller fails its requests).
        """
        batch, self._batch = self._batch, []
        if batch:
            try:
                self._write_batch(batch, now)
            except StorageError:
                self._counters["commit_failures"] += 1
                raise
            self._counters["commits"] += 1
        elif self._active.dirty and self._fsync_due(now):
            self._fsync(now)

    def _write_batch(self, batch: list[bytes], now: float) -> None:
        data = encode_frames(self._active.next_seq, batch)
        if self._active.count and self._active.size + len(data) > self.segment_bytes:
            self._rotate()
        size, count = self._active.size, self._active.count
        self._active.append(data, len(batch))
        if self.fsync_policy == "always" or self._fsync_due(now):
            try:
                self._fsync(now)
            except StorageError:
                self._active.discard_after(size, count)
                raise
        self._records_written += len(batch)
        self._bytes_written += len(data)
        self._records_since_snapshot += len(batch)
        self._log_bytes_since_snapshot += len(data)

    def _fsync_due(self, now: float) -> bool:
        if self.fsync_policy == "always":
            return True
        if self.fsync_policy == "interval":
            return now - self._last_fsync >= self.fsync_interval
        return False

    def next_fsync_deadline(self) -> float | None:
        """When the next `commit`/`sync` should run so the `interval` policy holds, or None."""
        if self.fsync_policy != "interval" or not self._active.dirty:
            return None
        return self._last_fsync + self.fsync_interval

    def sync(self, now: float | None = None) -> None:
        """Make every committed record durable now, whatever the policy."""
        if self._active.dirty:
            self._fsync(time.monotonic() if now is None else now)

    def _fsync(self, now: float) -> None:
        started = time.perf_counter()
        self._active.fsync()
        latency = time.perf_counter() - started
        self._last_fsync = now
        self._last_fsync_latency = latency
        self._max_fsync_latency = max(self._max_fsync_latency, latency)
        self._fsync_seconds += latency
        self._counters["fsyncs"] += 1

    def _rotate(self) -> None:
        """Close the active segment (fsynced first, so only the last segment can be torn) and
        start the next one."""
        if self._active.dirty:
            self._fsync(time.monotonic())
        new = ActiveSegment.create(self.state_dir, self._active.next_seq)
        old = self._active
        old.close()
        self._closed.append(SegmentInfo(old.path, old.first_seq, old.count, old.size))
        self._active = new
        self._counters["rotations"] += 1

    # ------------------------------------------------------------------ snapshots

    def should_snapshot(self) -> bool:
        """A snapshot is due: `snapshot_records` records since the last one, or a log since
        then `SNAPSHOT_LOG_RATIO` times the last snapshot's size and `snapshot_log_bytes` (0:
        never by size)."""
        if self._records_since_snapshot >= self.snapshot_records:
            return True
        if not self._records_since_snapshot or not self.snapshot_log_bytes:
            return False
        return self._log_bytes_since_snapshot >= max(self.snapshot_log_bytes, SNAPSHOT_LOG_RATIO * self._snapshot_bytes)

    def write_snapshot(self, payload: bytes) -> None:
        """Store `payload` as the state after record `last_seq`, then drop what it makes unneeded.

        Call between turns (no uncommitted `append`). Raises `StorageError` if the snapshot could
        not be written; the log is unaffected and remains the source of truth.
        """
        if self._batch:
            raise RuntimeError("write_snapshot() called with records appended but not committed")
        seq = self.last_seq
        self.sync()  # the log must hold everything the snapshot says, in case the snapshot is lost
        try:
            write_snapshot_file(self.state_dir, seq, payload)
        except OSError as exc:
            raise StorageError(f"cannot write the snapshot of record {seq} in {self.state_dir}: {exc}") from exc
        self._snapshot_seq = seq
        self._snapshot_bytes = len(payload)
        self._records_since_snapshot = 0
        self._log_bytes_since_snapshot = 0
        self._counters["snapshots"] += 1
        try:
            if self._active.count:
                self._rotate()  # so the segments before the snapshot can be deleted whole
            self._prune()
        except StorageError as exc:
            log.warning("snapshot of record %d written, but cleaning up after it failed: %s", seq, exc)

    def begin_snapshot(self) -> int:
        """Start a snapshot written elsewhere (`compaction.spawn_compactor`): the log is made
        durable and the active segment closed (so that the segments the snapshot covers can go
        whole; under `fsync = "always"` both cost next to nothing, the log being durable
        already), and the snapshot counters restart. Returns the record the snapshot must
        cover; call `finish_snapshot` once the file is written. Raises `StorageError`."""
        if self._batch:
            raise RuntimeError("begin_snapshot() called with records appended but not committed")
        self.sync()  # the log must hold everything the snapshot says, in case the snapshot is lost
        seq = self.last_seq
        if self._active.count:
            self._rotate()
        self._records_since_snapshot = 0
        self._log_bytes_since_snapshot = 0
        return seq

    def finish_snapshot(self, seq: int, size: int) -> None:
        """The snapshot of record `seq` (begun with `begin_snapshot`) is written, `size` bytes
        of payload: drop what it makes unneeded."""
        self._snapshot_seq = seq
        self._snapshot_bytes = size
        self._counters["snapshots"] += 1
        try:
            self._prune()
        except StorageError as exc:
            log.warning("snapshot of record %d written, but cleaning up after it failed: %s", seq, exc)

    def _prune(self) -> None:
        """Delete snapshots beyond the newest two, and segments covered by the older of those."""
        snapshots = list_snapshots(self.state_dir)
        if len(snapshots) < SNAPSHOTS_KEPT:
            return
        kept = snapshots[-SNAPSHOTS_KEPT:]
        oldest_kept = kept[0][0]
        doomed = [path for _, path in snapshots[:-SNAPSHOTS_KEPT]]
        covered = [s for s in self._closed if s.last_seq <= oldest_kept]
        doomed += [s.path for s in covered]
        doomed = [path for path in doomed if path.exists()]  # a compactor deletes them itself
        if not doomed:
            self._closed = [s for s in self._closed if s.last_seq > oldest_kept]
            return
        try:
            for path in doomed:
                path.unlink(missing_ok=True)
            fsync_dir(self.state_dir)
        except OSError as exc:
            log.warning("cannot delete files made unneeded by snapshot of record %d: %s", oldest_kept, exc)
            return
        finally:
            self._closed = [s for s in self._closed if s.path.exists()]
        log.info("deleted %s (covered by snapshot of record %d)", ", ".join(p.name for p in doomed), oldest_kept)

    # ------------------------------------------------------------------ lifecycle

    def stats(self) -> dict[str, float | int | str]:
        log_bytes = sum(s.size for s in self._closed) + self._active.size
        return {
            "state_dir": str(self.state_dir),
            "fsync_policy": self.fsync_policy,
            "last_seq": self.last_seq,
            "records_since_snapshot": self._records_since_snapshot,
            "log_bytes_since_snapshot": self._log_bytes_since_snapshot,
            "records_written": self._records_written,
            "bytes_written": self._bytes_written,
            "log_bytes": log_bytes,
            "segments": len(self._closed) + 1,
            "last_snapshot_seq": self._snapshot_seq,
            "last_snapshot_bytes": self._snapshot_bytes,
            "records_replayed": self._recovery.records_replayed,
            "torn_bytes_truncated": self._recovery.torn_bytes,
            "last_fsync_latency_ms": self._last_fsync_latency * 1000,
            "max_fsync_latency_ms": self._max_fsync_latency * 1000,
            "fsync_seconds": self._fsync_seconds,
            "poisoned": self._active.poisoned or "",
            **self._counters,
        }

    def close(self) -> None:
        """Make committed records durable and release the lock; uncommitted appends are dropped."""
        if self._lock is None:
            return
        try:
            if self._active.poisoned is None:
                self.sync()
        finally:
            self._active.close()
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
