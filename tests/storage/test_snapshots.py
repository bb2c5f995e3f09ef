"""Snapshots on real files: replay after them, pruning, crashes between steps, bad snapshots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from flamed.storage import CorruptLogError, Storage
from flamed.storage import snapshot as snapshot_module
from flamed.storage.snapshot import list_snapshots, load_newest_snapshot, write_snapshot_file

from .conftest import payload, segments, write

Open = Callable[..., Storage]


@pytest.mark.timeout(30)
def test_snapshot_then_replay_of_the_records_after_it(open_storage: Open) -> None:
    """Recovery gives the snapshot and only the records after it; breaks if records the
    snapshot covers are applied twice."""
    storage = open_storage(snapshot_records=10)
    write(storage, [payload(n) for n in range(10)])
    assert storage.should_snapshot()
    storage.write_snapshot(b"state after 10")
    assert not storage.should_snapshot()
    after = [payload(n) for n in range(10, 17)]
    write(storage, after, batch=3)
    storage.close()
    recovery = open_storage().recover()
    assert recovery.snapshot == b"state after 10"
    assert recovery.snapshot_seq == 10
    assert list(recovery.records) == after
    assert recovery.records_replayed == 7
    assert recovery.last_seq == 17


@pytest.mark.timeout(30)
def test_snapshot_with_nothing_after_it(open_storage: Open) -> None:
    """A snapshot followed by no records recovers to it, and numbering continues after it."""
    storage = open_storage()
    write(storage, [payload(n) for n in range(5)])
    storage.write_snapshot(b"five")
    storage.close()
    storage = open_storage()
    recovery = storage.recover()
    assert (recovery.snapshot, list(recovery.records), recovery.last_seq) == (b"five", [], 5)
    write(storage, [b"six"])
    assert storage.last_seq == 6


@pytest.mark.timeout(30)
def test_old_segments_and_snapshots_deleted(open_storage: Open, state_dir: Path) -> None:
    """Snapshots are kept two deep and segments back to the older one; breaks if the log grows
    without bound, or if the fallback snapshot loses the log it needs."""
    storage = open_storage(segment_bytes=400)
    for round_ in range(4):
        write(storage, [payload(round_ * 20 + n) for n in range(20)], batch=2)
        storage.write_snapshot(f"after {20 * (round_ + 1)}".encode())
    tail = [payload(n) for n in range(80, 85)]
    write(storage, tail)
    assert [seq for seq, _ in list_snapshots(state_dir)] == [60, 80]
    first_seqs = [int(p.name[4:24]) for p in segments(state_dir)]
    assert first_seqs[0] == 61  # everything up to the older kept snapshot is gone
    storage.close()
    recovery = open_storage().recover()
    assert recovery.snapshot == b"after 80"
    assert list(recovery.records) == tail


@pytest.mark.timeout(30)
def test_crash_before_snapshot_rename_keeps_old_state(open_storage: Open, state_dir: Path) -> None:
    """A snapshot .tmp left by a crash before its rename is ignored and removed; breaks if a
    half-written snapshot is read."""
    storage = open_storage()
    records = [payload(n) for n in range(8)]
    write(storage, records)
    storage.close()
    (state_dir / "snapshot-00000000000000000008.snap.tmp").write_bytes(b"FLAMESNP half written")
    recovery = open_storage().recover()
    assert recovery.snapshot is None
    assert list(recovery.records) == records
    assert [p.name for p in recovery.tmp_files_removed] == ["snapshot-00000000000000000008.snap.tmp"]
    assert not list(state_dir.glob("*.tmp"))


@pytest.mark.timeout(30)
def test_crash_between_snapshot_rename_and_segment_deletion(open_storage: Open, state_dir: Path) -> None:
    """Snapshots renamed in place but old segments not yet deleted: recovery uses the newest
    snapshot, skips the covered records, and finishes the cleanup."""
    storage = open_storage(segment_bytes=300)
    records = [payload(n) for n in range(30)]
    write(storage, records)
    storage.close()
    write_snapshot_file(state_dir, 10, b"at 10")
    write_snapshot_file(state_dir, 25, b"at 25")
    before = segments(state_dir)
    storage = open_storage(segment_bytes=300)
    recovery = storage.recover()
    assert recovery.snapshot == b"at 25"
    assert list(recovery.records) == records[25:]
    after = segments(state_dir)
    assert len(after) < len(before)
    assert int(after[0].name[4:24]) <= 11  # records 11.. still there for the fallback snapshot


@pytest.mark.timeout(30)
def test_bad_snapshot_falls_back_to_the_previous_one(open_storage: Open, state_dir: Path) -> None:
    """A snapshot failing its checksum is set aside as .bad and the previous snapshot plus the
    log are used; breaks if a damaged snapshot is loaded or stops start-up needlessly."""
    storage = open_storage()
    records = [payload(n) for n in range(30)]
    write(storage, records[:10])
    storage.write_snapshot(b"at 10")
    write(storage, records[10:20])
    storage.write_snapshot(b"at 20")
    write(storage, records[20:])
    storage.close()
    newest = state_dir / "snapshot-00000000000000000020.snap"
    data = bytearray(newest.read_bytes())
    data[-1] ^= 0xFF
    newest.write_bytes(bytes(data))
    recovery = open_storage().recover()
    assert recovery.snapshot == b"at 10"
    assert list(recovery.records) == records[10:]
    assert [p.name for p in recovery.snapshots_set_aside] == ["snapshot-00000000000000000020.snap.bad"]


@pytest.mark.timeout(30)
def test_bad_snapshot_without_the_log_behind_it_refuses_to_start(open_storage: Open, state_dir: Path) -> None:
    """When the only snapshot is bad and the log it covered is gone, start-up stops; breaks if
    the daemon starts with the covered records silently missing."""
    storage = open_storage(segment_bytes=300)
    write(storage, [payload(n) for n in range(30)])
    storage.close()
    write_snapshot_file(state_dir, 30, b"at 30")
    for segment in segments(state_dir):
        segment.unlink()
    snap = state_dir / "snapshot-00000000000000000030.snap"
    snap.write_bytes(snap.read_bytes()[:-1] + b"?")
    with pytest.raises(CorruptLogError, match="damaged"):
        Storage.open(state_dir)


@pytest.mark.timeout(30)
def test_log_ending_inside_the_snapshot(open_storage: Open, state_dir: Path) -> None:
    """If the log's tail was lost but the snapshot covers it, numbering resumes after the
    snapshot, and the next start accepts the gap the snapshot covers."""
    storage = open_storage()
    write(storage, [payload(n) for n in range(10)])
    storage.close()
    write_snapshot_file(state_dir, 15, b"at 15")
    storage = open_storage()
    assert storage.recover().last_seq == 15
    write(storage, [b"sixteen"])
    storage.close()
    recovery = open_storage().recover()
    assert (recovery.snapshot, list(recovery.records)) == (b"at 15", [b"sixteen"])


@pytest.mark.timeout(30)
def test_a_snapshot_flushed_in_pieces_reads_back_whole(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot bigger than the flush interval (written and fdatasynced piece by piece, so the
    log's fsyncs never wait for all of it) is byte for byte what was given. Would break: a piece
    skipped or written twice at a boundary."""
    monkeypatch.setattr(snapshot_module, "SYNC_EVERY", 7)
    state_dir.mkdir()
    data = bytes(range(256)) * 3 + b"tail"
    write_snapshot_file(state_dir, 9, data)
    loaded, _ = load_newest_snapshot(state_dir)
    assert loaded is not None
    assert loaded.seq == 9
    assert loaded.payload == data
