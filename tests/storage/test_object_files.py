"""The object cache's files: a part is complete once committed, a torn or damaged one is set
aside at start and never read, and leftovers of an interrupted write or update are removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flamed.storage import LockedError, StorageError
from flamed.storage.objects import BASE, DELTA, ObjectFiles

pytestmark = pytest.mark.timeout(20)


def store(files: ObjectFiles, key: str, data: bytes, kind: int = BASE, version: int = 1) -> Path:
    writer = files.writer(key)
    for start in range(0, len(data), 3):  # several appends, as chunks arrive
        writer.append(data[start : start + 3])
    return writer.commit(kind, version, 7).path


def test_committed_parts_are_found_again_with_their_bytes(tmp_path: Path) -> None:
    """Breaks if a reopened object cache does not find its committed parts (kind, version, size, bytes) and
    live sessions again."""
    files = ObjectFiles.open(tmp_path)
    store(files, "a/s/o", b"hello world")
    store(files, "a/s/o", b"!", DELTA, 2)
    files.mark_live("a/s")
    files.close()
    again = ObjectFiles.open(tmp_path)
    scan = again.scan()
    assert {(p.key, p.kind, p.version, p.size) for p in scan.parts} == {("a/s/o", BASE, 1, 11), ("a/s/o", DELTA, 2, 1)}
    base = next(p for p in scan.parts if p.kind == BASE)
    assert again.read(base, 0, 100) == b"hello world"
    assert again.read(base, 6, 3) == b"wor"
    assert scan.live == {"a/s"}
    assert not scan.broken
    again.close()


def test_a_torn_part_is_set_aside_and_the_rest_stands(tmp_path: Path) -> None:
    """Would break if start-up read a part whose write was cut short (or died on it)."""
    files = ObjectFiles.open(tmp_path)
    good = store(files, "a/s/good", b"kept")
    torn = store(files, "a/s/torn", b"0123456789")
    files.close()
    with torn.open("r+b") as f:  # the disk kept only part of it
        f.truncate(os.path.getsize(torn) - 20)
    files = ObjectFiles.open(tmp_path)
    scan = files.scan()
    assert [p.key for p in scan.parts] == ["a/s/good"]
    assert good.exists()
    assert len(scan.broken) == 1
    assert scan.broken[0].name.endswith(".broken")
    assert not torn.exists()
    assert files.scan().broken == []  # set aside once, never read again
    files.close()


def test_a_bit_flip_in_the_header_or_a_wrong_name_is_caught(tmp_path: Path) -> None:
    """Breaks if a part file with a damaged header, or renamed to another version, is served instead of
    reported broken."""
    files = ObjectFiles.open(tmp_path)
    flipped = store(files, "a/s/x", b"data")
    renamed = store(files, "a/s/y", b"data")
    files.close()
    raw = bytearray(flipped.read_bytes())
    raw[0] ^= 0xFF
    flipped.write_bytes(bytes(raw))
    renamed.rename(renamed.with_name(renamed.name.replace("-00000000000000000001", "-00000000000000000009")))
    files = ObjectFiles.open(tmp_path)
    scan = files.scan()
    assert scan.parts == []
    assert len(scan.broken) == 2
    files.close()


def test_leftovers_of_an_interrupted_write_or_update_are_removed(tmp_path: Path) -> None:
    """A crash after the new base was renamed in but before the old parts went: the newest base
    wins, older parts go; a .tmp of a write never acknowledged goes too."""
    files = ObjectFiles.open(tmp_path)
    store(files, "a/s/o", b"old", BASE, 1)
    store(files, "a/s/o", b"d", DELTA, 2)
    store(files, "a/s/o", b"new", BASE, 3)
    files.writer("a/s/o").append(b"never committed")  # left open: as after a crash
    files.close()
    files = ObjectFiles.open(tmp_path)
    scan = files.scan()
    assert [(p.kind, p.version) for p in scan.parts] == [(BASE, 3)]
    assert scan.removed == 3
    assert [p.name.split("-", 1)[1] for p in files.part_paths("a/s/o")] == ["base-00000000000000000003.obj"]
    assert not list(files.bucket("a/s/o").glob("*.tmp"))
    files.close()


def test_one_object_cache_per_state_directory(tmp_path: Path) -> None:
    """Breaks if two object caches can open the same state directory."""
    files = ObjectFiles.open(tmp_path)
    with pytest.raises(LockedError):
        ObjectFiles.open(tmp_path)
    files.close()


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    """Breaks if a part whose write failed is left in the bucket (it would be found on the next scan)."""
    files = ObjectFiles.open(tmp_path)
    writer = files.writer("a/s/o")
    writer.append(b"abc")
    os.close(writer.fd)  # type: ignore[arg-type]  # the disk goes away under it
    writer.fd = os.open(os.devnull, os.O_RDONLY)
    with pytest.raises(StorageError):
        writer.append(b"more")
    assert list(files.bucket("a/s/o").iterdir()) == []
    files.close()
