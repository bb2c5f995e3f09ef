"""The session manager's side of durable state: recovery at start-up and rollback after a
failed commit.

Rules:
- `recover_state(storage)` rebuilds the `ClusterState` from the newest valid snapshot plus the
  records after it, before the daemon serves anything; it logs what it found (records replayed,
  repairs made) and raises `StorageError` with a clear message if a snapshot cannot be read.
- `reread_state(state_dir)` rebuilds the state from what is on disk *now*, without the lock
  (the caller holds it). It is how memory is made equal to disk again after a batch failed:
  the storage has cut the batch off the log, so re-reading gives the state before the turn.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec
import platformdirs

from flamed.core.records import AnyRecord
from flamed.core.snapshot import SnapshotFormatError, decode_state
from flamed.core.state import ClusterState
from flamed.storage import Recovery, Storage, StorageError
from flamed.storage.recovery import read_state_dir

log = logging.getLogger("flamed.session_manager")

_record_decoder = msgspec.msgpack.Decoder(AnyRecord)


def default_state_dir() -> Path:
    """The platformdirs user state dir for `flame` (used when neither flag nor config names one)."""
    return Path(platformdirs.user_state_dir("flame"))


@dataclass(frozen=True)
class Recovered:
    records_replayed: int
    snapshot_seq: int
    seconds: float


@contextmanager
def _no_gc() -> Iterator[None]:
    """Rebuilding creates millions of small objects and no cycles; the cyclic collector would
    rescan them over and over (it doubles the time), so it is paused meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def state_from(recovery: Recovery, where: Path) -> ClusterState:
    """Snapshot + replay. Raises `StorageError` when a snapshot or record does not decode."""
    with _no_gc():
        try:
            state = decode_state(recovery.snapshot) if recovery.snapshot is not None else ClusterState()
        except SnapshotFormatError as exc:
            raise StorageError(
                f"{where}: snapshot of record {recovery.snapshot_seq}: {exc}; move that snapshot file aside "
                "(recovery then falls back to the previous one and the log)"
            ) from exc
        seq = recovery.snapshot_seq
        decode = _record_decoder.decode
        for payload in recovery.records:
            seq += 1
            try:
                record = decode(payload)
            except msgspec.DecodeError as exc:
                raise StorageError(
                    f"{where}: record {seq} does not decode ({exc}); it was written by another version "
                    "or the log is damaged: restore the state directory from a backup or move it aside"
                ) from exc
            state.apply(record)
        state.touched.clear()  # nobody watches yet
    return state


def recover_state(storage: Storage) -> tuple[ClusterState, Recovered]:
    started = time.perf_counter()
    recovery = storage.recover()
    _log_repairs(recovery)
    state = state_from(recovery, storage.state_dir)
    storage.recovered()
    seconds = time.perf_counter() - started
    log.info(
        "recovered %d records (snapshot at seq %d) in %.3f s from %s",
        recovery.records_replayed,
        recovery.snapshot_seq,
        seconds,
        storage.state_dir,
    )
    return state, Recovered(recovery.records_replayed, recovery.snapshot_seq, seconds)


def reread_state(state_dir: Path) -> ClusterState:
    """The state as the files in `state_dir` hold it now (caller holds the lock)."""
    return state_from(read_state_dir(state_dir).recovery, state_dir)


def _log_repairs(recovery: Recovery) -> None:
    if recovery.torn_tail_truncated:
        log.warning(
            "the log ended with a torn record (%d bytes, a crash mid-write): cut off, bytes kept in %s",
            recovery.torn_bytes,
            recovery.broken_file,
        )
    for path in recovery.snapshots_set_aside:
        log.warning("snapshot %s failed its checksum: set aside, using the previous one and the log", path)
    for path in recovery.tmp_files_removed:
        log.warning("removed %s, left over from a write interrupted by a crash", path)
