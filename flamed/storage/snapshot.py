"""Snapshot files: the whole state as of one log record, written atomically.

A snapshot is named `snapshot-<sequence number of the last record it covers, 20 digits>.snap`
and holds (little-endian):

    b"FLAMESNP" | u64 covered seq | u32 crc32(payload) | u64 payload length | payload

Rules: a snapshot is written to `<name>.tmp`, fsynced, renamed and the directory fsynced, so a
snapshot file that exists is complete unless the disk damaged it afterwards. Reading checks the
magic, the sequence number against the name, the length against the file size and the CRC; a
snapshot that fails is renamed to `*.bad` (kept for inspection, never read again) and the
previous one is used, which is why the log is kept back to the previous snapshot.
"""

from __future__ import annotations

import logging
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from flamed.storage.durable import atomic_write, unused_name

log = logging.getLogger("flamed.storage")

SNAPSHOT_MAGIC = b"FLAMESNP"
_HEADER = struct.Struct("<8sQIQ")
SNAPSHOT_HEADER_SIZE = _HEADER.size
_NAME = re.compile(r"snapshot-([0-9]{20})\.snap")  # whole name: fullmatch, ASCII digits


def snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:020d}.snap"


def list_snapshots(state_dir: Path) -> list[tuple[int, Path]]:
    """(covered seq, path) of every snapshot file in the directory, oldest first."""
    found = []
    for path in state_dir.iterdir():
        match = _NAME.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


#: A snapshot is flushed to disk every this many bytes as it is written (`atomic_write`).
SYNC_EVERY = 4 << 20


def write_snapshot_file(state_dir: Path, seq: int, payload: bytes) -> Path:
    """Durably write the snapshot covering records 1..seq; raises OSError, leaving no file."""
    path = state_dir / snapshot_name(seq)
    header = _HEADER.pack(SNAPSHOT_MAGIC, seq, zlib.crc32(payload), len(payload))
    atomic_write(path, [header, payload], sync_every=SYNC_EVERY)
    return path


def check_snapshot(data: bytes, seq: int) -> str | None:
    """What is wrong with the bytes of a snapshot named for `seq`, or None if it is good."""
    if len(data) < SNAPSHOT_HEADER_SIZE:
        return f"file is {len(data)} bytes, shorter than the {SNAPSHOT_HEADER_SIZE}-byte header"
    magic, covered, crc, length = _HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC:
        return f"bad magic {magic!r}"
    if covered != seq:
        return f"header says it covers record {covered} but the file name says {seq}"
    if length != len(data) - SNAPSHOT_HEADER_SIZE:
        return f"header says {length} payload bytes but the file holds {len(data) - SNAPSHOT_HEADER_SIZE}"
    if zlib.crc32(memoryview(data)[SNAPSHOT_HEADER_SIZE:]) != crc:
        return "payload checksum mismatch"
    return None


@dataclass(frozen=True)
class LoadedSnapshot:
    seq: int
    path: Path
    payload: bytes


def load_newest_snapshot(state_dir: Path) -> tuple[LoadedSnapshot | None, list[Path]]:
    """The newest snapshot that verifies, and the bad ones set aside (as `*.bad`) on the way.

    Raises OSError if a snapshot cannot be read or set aside (the caller stops start-up: going
    on with an older snapshot while a newer one exists unread would lose acknowledged state).
    """
    set_aside: list[Path] = []
    for seq, path in reversed(list_snapshots(state_dir)):
        data = path.read_bytes()
        problem = check_snapshot(data, seq)
        if problem is None:
            return LoadedSnapshot(seq, path, data[SNAPSHOT_HEADER_SIZE:]), set_aside
        bad = unused_name(path, ".bad")
        path.rename(bad)
        set_aside.append(bad)
        log.error("snapshot %s is damaged (%s); set aside as %s, trying the previous one", path, problem, bad)
    return None, set_aside
