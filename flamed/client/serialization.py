"""How cached objects become bytes and back: cloudpickle with pickle protocol 5.

Large buffers (numpy arrays, Arrow buffers, `bytes` of `PickleBuffer`s) leave the pickle
*out of band*: the payload lists them after the pickle, each aligned to 64 bytes, and
`dumps` returns the pieces as memoryviews of the caller's own buffers, so a 100 MB array is
never copied into one big bytes object to be sent. `loads` hands the unpickler slices of the
payload it is given; given a writable buffer (a bytearray, a copy-on-write mmap) the arrays it
rebuilds are views of it: no copy either. numpy and pyarrow are not dependencies; when they are
installed their own pickle support does the rest (cloudpickle is, for arbitrary objects,
closures and classes defined in `__main__`).

Payload layout (little-endian):

    b"FLP5" | u32 buffer count n | u64 pickle length | n * u64 buffer length | padding to 64
    | pickle | padding to 64 | buffer 0 | padding to 64 | buffer 1 ...
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

import cloudpickle  # type: ignore[import-untyped]  # no stubs; dumps() is all we use

MAGIC = b"FLP5"
ALIGN = 64
_HEAD = struct.Struct("<4sIQ")
_LEN = struct.Struct("<Q")
_ZEROS = bytes(ALIGN)


class Payload:
    """A serialized object as a list of pieces (memoryviews) and their total size."""

    __slots__ = ("pieces", "size")

    def __init__(self, pieces: list[memoryview]) -> None:
        self.pieces = pieces
        self.size = sum(p.nbytes for p in pieces)

    def join(self) -> bytes:
        return b"".join(self.pieces)

    def chunks(self, chunk_size: int) -> list[memoryview]:
        """Views of at most `chunk_size` bytes, in order (copies only where a chunk straddles
        two pieces)."""
        out: list[memoryview] = []
        pending: list[memoryview] = []
        pending_size = 0
        for whole in self.pieces:
            piece = whole
            while piece.nbytes:
                take = piece[: chunk_size - pending_size]
                piece = piece[take.nbytes :]
                pending.append(take)
                pending_size += take.nbytes
                if pending_size == chunk_size:
                    out.append(pending[0] if len(pending) == 1 else memoryview(b"".join(pending)))
                    pending, pending_size = [], 0
        if pending:
            out.append(pending[0] if len(pending) == 1 else memoryview(b"".join(pending)))
        return out


def _pad(size: int) -> int:
    return -size % ALIGN


def dumps(obj: Any) -> Payload:
    """Serialize `obj`; large buffers stay where they are (the pieces reference them)."""
    buffers: list[pickle.PickleBuffer] = []
    data = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    head = _HEAD.pack(MAGIC, len(raws), len(data)) + b"".join(_LEN.pack(r.nbytes) for r in raws)
    pieces = [memoryview(head + _ZEROS[: _pad(len(head))]), memoryview(data)]
    offset = len(head) + _pad(len(head)) + len(data)
    for raw in raws:
        if _pad(offset):
            pieces.append(memoryview(_ZEROS[: _pad(offset)]))
            offset += _pad(offset)
        pieces.append(raw.cast("B") if raw.format != "B" or raw.ndim != 1 else raw)
        offset += raw.nbytes
    return Payload(pieces)


def loads(payload: memoryview | bytes | bytearray) -> Any:
    """The object in `payload`; out-of-band buffers are slices of it (zero-copy)."""
    view = memoryview(payload)
    if view.nbytes < _HEAD.size or bytes(view[:4]) != MAGIC:
        raise ValueError("not a cached object (bad magic); was it written by another client?")
    _, count, pickle_length = _HEAD.unpack_from(view)
    offset = _HEAD.size
    lengths = []
    for _ in range(count):
        lengths.append(_LEN.unpack_from(view, offset)[0])
        offset += _LEN.size
    offset += _pad(offset)
    data = view[offset : offset + pickle_length]
    offset += pickle_length
    buffers = []
    for length in lengths:
        offset += _pad(offset)
        buffers.append(view[offset : offset + length])
        offset += length
    if offset > view.nbytes:
        raise ValueError(f"cached object is truncated: {view.nbytes} bytes, its header says {offset}")
    return pickle.loads(data, buffers=buffers)
