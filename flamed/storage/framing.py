"""Byte layout of the log: segment files, their header, and length + CRC framed records.

A segment is named `wal-<sequence number of its first record, 20 digits>.log`, so names sort in
log order, and holds (little-endian):

    header   b"FLAMEWAL" | u32 version | u64 first_seq              20 bytes
    frame    u32 length | u32 crc | payload                         repeated

Records are numbered from 1 across all segments; the records of a segment are numbered
first_seq, first_seq + 1, ... in file order. A frame does not carry its number, but its CRC
does: `crc = crc32(payload, crc32(u64 seq))`. So a frame only verifies at its own position in
the log: a frame copied or shifted elsewhere, or a frame hidden inside a task's input bytes,
does not verify, which keeps the torn-tail rule below from being fooled by payload contents.

A segment is created complete with its header (tmp -> fsync -> rename), so a header is never
torn: a bad header is damage.

Which bad bytes count as *the torn tail* (decided here): scanning stops at the first frame that
is not valid: fewer than 8 bytes left, length 0 (never written: zero-filled space a crash can
leave at the end of a file must not read as empty records), length past the end of the file, or
a CRC mismatch. That frame (record number n) and everything after it is torn only if no frame
valid as record n + 1 starts at any later byte offset of the file: a crash can only cut off the
end of the last write, while a bad frame *followed by the next record* is damage to bytes that
were already durable. A bit flip in the very last record is indistinguishable from a torn write
of it, and is treated as one.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

SEGMENT_MAGIC = b"FLAMEWAL"
SEGMENT_VERSION = 1
_SEGMENT_HEADER = struct.Struct("<8sIQ")
SEGMENT_HEADER_SIZE = _SEGMENT_HEADER.size

_FRAME = struct.Struct("<II")
_SEQ = struct.Struct("<Q")
FRAME_HEADER_SIZE = _FRAME.size
MAX_RECORD_BYTES = 0xFFFFFFFF

_SEGMENT_NAME = re.compile(r"wal-([0-9]{20})\.log")  # whole name: fullmatch, ASCII digits
_NON_ZERO = re.compile(rb"[^\x00]")


def segment_name(first_seq: int) -> str:
    return f"wal-{first_seq:020d}.log"


def parse_segment_name(name: str) -> int | None:
    """The first sequence number encoded in a segment file name, or None if not a segment."""
    match = _SEGMENT_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def encode_segment_header(first_seq: int) -> bytes:
    return _SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, first_seq)


def check_segment_header(data: bytes, first_seq: int) -> str | None:
    """What is wrong with the header of a segment expected to start at `first_seq`, or None."""
    if len(data) < SEGMENT_HEADER_SIZE:
        return f"file is {len(data)} bytes, shorter than the {SEGMENT_HEADER_SIZE}-byte segment header"
    magic, version, seq = _SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        return f"bad magic {magic!r} (not a write-ahead log segment)"
    if version != SEGMENT_VERSION:
        return f"unknown segment version {version} (this build reads version {SEGMENT_VERSION})"
    if seq != first_seq:
        return f"header says the first record is {seq} but the file name says {first_seq}"
    return None


def record_crc(seq: int, record: bytes | memoryview) -> int:
    return zlib.crc32(record, zlib.crc32(_SEQ.pack(seq)))


def encode_frames(first_seq: int, records: Sequence[bytes]) -> bytes:
    """The frames of `records`, numbered from `first_seq`, as one buffer (one write)."""
    parts: list[bytes] = []
    pack = _FRAME.pack
    seq_pack = _SEQ.pack
    crc32 = zlib.crc32
    for seq, record in enumerate(records, first_seq):
        if not record:
            raise ValueError("an empty record cannot be stored (length 0 marks never-written space)")
        if len(record) > MAX_RECORD_BYTES:
            raise ValueError(f"record of {len(record)} bytes is over the {MAX_RECORD_BYTES}-byte limit")
        parts.append(pack(len(record), crc32(record, crc32(seq_pack(seq)))))
        parts.append(record)
    return b"".join(parts)


@dataclass(frozen=True)
class Damage:
    """The first invalid frame of a segment."""

    offset: int
    what: str
    #: True when the next record does not follow: a torn tail, if this is the last segment.
    torn: bool


@dataclass(frozen=True)
class Scan:
    #: Number of valid frames before the damage (or in the whole file).
    count: int
    #: Offset just past the last valid frame (where the file would be truncated).
    end: int
    damage: Damage | None


def scan_frames(data: bytes, first_seq: int) -> Scan:
    """Check the frames of a whole segment file (header already checked) without copying them."""
    view = memoryview(data)
    size = len(data)
    offset = SEGMENT_HEADER_SIZE
    seq = first_seq
    unpack = _FRAME.unpack_from
    while offset < size:
        if size - offset < FRAME_HEADER_SIZE:
            return _stop(view, seq, first_seq, offset, f"{size - offset} bytes left, short of a frame header")
        length, crc = unpack(data, offset)
        start = offset + FRAME_HEADER_SIZE
        end = start + length
        if length == 0:
            return _stop(view, seq, first_seq, offset, "frame length 0")
        if end > size:
            return _stop(view, seq, first_seq, offset, f"frame length {length} runs past the end of the file")
        if record_crc(seq, view[start:end]) != crc:
            return _stop(view, seq, first_seq, offset, f"checksum mismatch in a {length}-byte record")
        offset = end
        seq += 1
    return Scan(seq - first_seq, offset, None)


def _stop(view: memoryview, seq: int, first_seq: int, offset: int, what: str) -> Scan:
    later = first_valid_frame(view, offset + 1, seq + 1)
    what = f"record {seq}: {what}"
    if later is not None:
        what += f" (record {seq + 1} follows intact at offset {later})"
    return Scan(seq - first_seq, offset, Damage(offset, what, torn=later is None))


def first_valid_frame(view: memoryview, start: int, seq: int) -> int | None:
    """The first offset >= start where a complete frame valid as record `seq` begins, or None.

    Costs one CRC per offset whose length field fits in the rest of the file; it runs only once
    damage was found, and over a torn tail it is short because a torn tail is at most one write.
    """
    size = len(view)
    unpack = _FRAME.unpack_from
    seed = zlib.crc32(_SEQ.pack(seq))
    crc32 = zlib.crc32
    offset = start
    while offset <= size - FRAME_HEADER_SIZE:
        length, crc = unpack(view, offset)
        if length == 0:
            # Zero-filled space (a common torn tail) is skipped in one step: a frame needs a
            # non-zero byte among its 4 length bytes.
            found = _NON_ZERO.search(view, offset + 4)
            if found is None:
                return None
            offset = max(offset + 1, found.start() - 3)
            continue
        end = offset + FRAME_HEADER_SIZE + length
        if end <= size and crc32(view[offset + FRAME_HEADER_SIZE : end], seed) == crc:
            return offset
        offset += 1
    return None


def iter_records(data: bytes, end: int) -> Iterator[bytes]:
    """The payloads of the frames in `data[SEGMENT_HEADER_SIZE:end]`, already checked by
    `scan_frames` (this does not verify them again)."""
    offset = SEGMENT_HEADER_SIZE
    unpack = _FRAME.unpack_from
    while offset < end:
        length, _ = unpack(data, offset)
        start = offset + FRAME_HEADER_SIZE
        offset = start + length
        yield data[start:offset]
