"""The write-ahead log on real files: round trips, rotation, torn tails, corruption."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from flamed.storage import CorruptLogError, LockedError, Storage
from flamed.storage.framing import FRAME_HEADER_SIZE, SEGMENT_HEADER_SIZE

from .conftest import payload, segments, write

Open = Callable[..., Storage]


@pytest.mark.timeout(30)
def test_round_trip_across_segment_rotation(open_storage: Open, state_dir: Path) -> None:
    """Records written over several segments come back in order; breaks if rotation loses or
    renumbers records."""
    records = [payload(n) for n in range(200)]
    storage = open_storage(segment_bytes=1024)
    write(storage, records, batch=7)
    assert int(storage.stats()["segments"]) > 3
    storage.close()
    recovery = open_storage(segment_bytes=1024).recover()
    assert list(recovery.records) == records
    assert recovery.records_replayed == 200
    assert recovery.last_seq == 200
    assert not recovery.torn_tail_truncated


@pytest.mark.timeout(30)
def test_reopen_replays_exactly_and_appends_continue(open_storage: Open) -> None:
    """Each reopen replays what was committed, and appends after a reopen continue the log;
    breaks if numbering restarts or a reopen duplicates records."""
    expected: list[bytes] = []
    for round_ in range(4):
        storage = open_storage(segment_bytes=600)
        assert list(storage.recover().records) == expected
        more = [payload(round_ * 100 + n) for n in range(25)]
        write(storage, more, batch=4)
        expected += more
        storage.append(b"never committed")
        storage.close()
    assert list(open_storage().recover().records) == expected


@pytest.mark.timeout(30)
def test_state_dir_created_private(open_storage: Open, state_dir: Path) -> None:
    """The state directory is created 0700; breaks if task inputs become readable by others."""
    open_storage()
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700


@pytest.mark.timeout(30)
def test_second_opener_is_refused(open_storage: Open, state_dir: Path) -> None:
    """A second session manager on the same directory is refused and told who holds it;
    breaks if two writers could interleave in one log."""
    first = open_storage()
    with pytest.raises(LockedError, match=rf"state directory .* is in use by pid {os.getpid()}"):
        Storage.open(state_dir)
    first.close()
    open_storage().close()


def _write_and_close(open_storage: Open, count: int) -> list[bytes]:
    records = [payload(n) for n in range(count)]
    storage = open_storage()
    write(storage, records, batch=2)
    storage.close()
    return records


@pytest.mark.timeout(60)
def test_torn_tail_at_every_offset_of_the_last_record(open_storage: Open, state_dir: Path) -> None:
    """Cutting the file at any byte inside the last frame loses only that record and keeps the
    cut bytes in a .broken file; breaks if a torn write stops start-up or loses earlier records."""
    records = _write_and_close(open_storage, 5)
    (segment,) = segments(state_dir)
    original = segment.read_bytes()
    last_frame = FRAME_HEADER_SIZE + len(records[-1])
    for cut in range(1, last_frame):
        keep = len(original) - cut
        segment.write_bytes(original[:keep])
        storage = open_storage()
        recovery = storage.recover()
        assert list(recovery.records) == records[:-1], cut
        assert recovery.torn_tail_truncated
        assert recovery.broken_file is not None
        assert recovery.broken_file.read_bytes() == original[keep - (last_frame - cut) : keep]
        assert recovery.torn_bytes == last_frame - cut
        storage.close()
    # evidence is never overwritten: one .broken file per repair
    assert len(list(state_dir.glob("*.broken"))) == last_frame - 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "tail",
    [b"\x00" * 4096, b"garbage that is not a frame at all", os.urandom(3000), b"\x01"],
    ids=["zero-filled", "text", "random", "one-byte"],
)
def test_junk_after_the_last_record_is_cut(open_storage: Open, state_dir: Path, tail: bytes) -> None:
    """Zero-filled or garbage space after the last write is a torn tail, not records; breaks if
    zeros read as empty records or if junk stops start-up."""
    records = _write_and_close(open_storage, 6)
    (segment,) = segments(state_dir)
    with segment.open("ab") as file:
        file.write(tail)
    storage = open_storage()
    recovery = storage.recover()
    assert list(recovery.records) == records
    assert recovery.broken_file is not None
    assert recovery.broken_file.read_bytes() == tail
    write(storage, [b"after repair"])
    storage.close()
    assert list(open_storage().recover().records) == [*records, b"after repair"]


def _offset_of_record(index: int, records: list[bytes]) -> int:
    return SEGMENT_HEADER_SIZE + sum(FRAME_HEADER_SIZE + len(r) for r in records[:index])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("field_offset", [0, 4, FRAME_HEADER_SIZE + 3], ids=["length", "crc", "payload"])
def test_bit_flip_in_the_middle_refuses_to_start(open_storage: Open, state_dir: Path, field_offset: int) -> None:
    """A damaged record followed by intact ones is corruption, named with file and offset;
    breaks if damage to acknowledged records is silently truncated away."""
    records = _write_and_close(open_storage, 6)
    (segment,) = segments(state_dir)
    data = bytearray(segment.read_bytes())
    offset = _offset_of_record(2, records)
    data[offset + field_offset] ^= 0x10
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match=rf"{segment.name}, offset {offset}: record 3") as info:
        Storage.open(state_dir)
    assert "backup" in str(info.value)
    assert not list(state_dir.glob("*.broken"))
    assert segment.read_bytes() == bytes(data)  # nothing repaired behind the operator's back


@pytest.mark.timeout(30)
def test_damage_at_the_end_of_an_older_segment_refuses_to_start(open_storage: Open, state_dir: Path) -> None:
    """Only the last segment can be torn (older ones were fsynced before rotation); breaks if a
    damaged older segment is cut and later segments replayed over a hole."""
    storage = open_storage(segment_bytes=300)
    write(storage, [payload(n) for n in range(30)], batch=3)
    storage.close()
    first = segments(state_dir)[0]
    first.write_bytes(first.read_bytes()[:-5])
    with pytest.raises(CorruptLogError, match=rf"{first.name}, offset \d+: .*not the last segment"):
        Storage.open(state_dir)


@pytest.mark.timeout(30)
def test_bad_segment_header_refuses_to_start(open_storage: Open, state_dir: Path) -> None:
    """A segment whose header is wrong is damage, not a torn tail; breaks if it is ignored."""
    _write_and_close(open_storage, 3)
    (segment,) = segments(state_dir)
    data = bytearray(segment.read_bytes())
    data[0:8] = b"NOTAWAL!"
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match=rf"{segment.name}, offset 0: bad magic"):
        Storage.open(state_dir)


@pytest.mark.timeout(30)
def test_missing_segment_refuses_to_start(open_storage: Open, state_dir: Path) -> None:
    """A gap in the record numbers is lost history; breaks if later segments replay over it."""
    storage = open_storage(segment_bytes=300)
    write(storage, [payload(n) for n in range(30)], batch=3)
    storage.close()
    files = segments(state_dir)
    assert len(files) >= 3
    files[1].unlink()
    with pytest.raises(CorruptLogError, match=rf"{files[2].name}, offset 0: records \d+\.\.\d+ are missing"):
        Storage.open(state_dir)


@pytest.mark.timeout(30)
def test_fsync_policies(open_storage: Open) -> None:
    """`always` fsyncs every commit, `interval` at most once per interval, `never` only at
    close; breaks if acknowledgements run ahead of the policy."""
    always = open_storage(fsync="always")
    for turn in range(3):
        always.append(payload(turn))
        always.commit(float(turn))
    assert always.stats()["fsyncs"] == 3
    always.close()

    interval = open_storage(fsync="interval", fsync_interval=1.0)
    for now in (0.0, 0.2, 0.5, 1.1, 1.3):
        interval.append(payload(1))
        interval.commit(now)
    assert interval.stats()["fsyncs"] == 2  # at 0.0 and 1.1
    assert interval.next_fsync_deadline() == pytest.approx(2.1)
    interval.commit(2.2)  # an empty commit past the deadline flushes
    assert interval.stats()["fsyncs"] == 3
    assert interval.next_fsync_deadline() is None
    interval.close()

    never = open_storage(fsync="never")
    write(never, [payload(n) for n in range(10)])
    assert never.stats()["fsyncs"] == 0
    never.close()


@pytest.mark.timeout(30)
def test_empty_record_rejected(open_storage: Open) -> None:
    """An empty payload would read back as never-written space; breaks if it is accepted."""
    with pytest.raises(ValueError, match="empty"):
        open_storage().append(b"")


_HOLDER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from flamed.storage import Storage\n"
    "storage = Storage.open(Path(sys.argv[1]))\n"
    "print('holding', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_lock_held_by_another_process_and_freed_by_its_death(state_dir: Path) -> None:
    """Another process holding the directory is named by pid; after it is SIGKILLed the lock is
    free at once; breaks if a stale LOCK file could block a restart after a crash."""
    with subprocess.Popen([sys.executable, "-c", _HOLDER, str(state_dir)], stdout=subprocess.PIPE, text=True) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "holding\n"
            with pytest.raises(LockedError, match=rf"in use by pid {holder.pid}"):
                Storage.open(state_dir)
        finally:
            holder.kill()
            holder.wait(timeout=30)
    Storage.open(state_dir).close()
