"""How cached objects become bytes: cloudpickle with out-of-band buffers, rebuilt as views of
the bytes they arrive in; and the node-local copies that processes of one node share."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from flamed.client.cache import ObjectRef
from flamed.client.errors import FlameError
from flamed.client.local_copies import LocalCopies
from flamed.client.serialization import ALIGN, dumps, loads

pytestmark = pytest.mark.timeout(20)


def test_large_buffers_travel_out_of_band_and_come_back_as_views() -> None:
    """Would break if an array were copied into the pickle (the payload's pieces would not
    reference the caller's array) or rebuilt as a copy of what arrived."""
    array = np.arange(1_000_000, dtype=np.int64)
    table = pa.table({"x": np.arange(1000)})
    payload = dumps({"array": array, "table": table, "f": lambda x: x + 1})
    assert any(np.shares_memory(np.frombuffer(p, dtype=np.uint8), array) for p in payload.pieces if p.nbytes)
    received = bytearray(payload.join())
    back = loads(received)
    assert np.array_equal(back["array"], array)
    assert back["array"].flags.writeable
    assert np.shares_memory(back["array"], np.frombuffer(received, dtype=np.uint8))
    assert back["array"].ctypes.data % ALIGN == (np.frombuffer(received, dtype=np.uint8).ctypes.data % ALIGN)
    assert back["table"].equals(table)
    assert back["f"](1) == 2


def test_chunks_cover_the_payload_in_order() -> None:
    """Breaks if a serialized payload's chunks exceed their size, or do not join back to the payload."""
    payload = dumps([os.urandom(1000), np.arange(5000), "tail"])
    for size in (1, 7, 4096, payload.size, payload.size * 2):
        chunks = payload.chunks(size)
        assert all(c.nbytes <= size for c in chunks)
        assert b"".join(chunks) == payload.join()


def test_a_payload_that_is_not_ours_or_cut_short_is_refused() -> None:
    """Breaks if bytes that are not our format, or a truncated payload, are unpickled instead of refused."""
    with pytest.raises(ValueError, match="bad magic"):
        loads(b"\x80\x05junk")
    data = dumps(np.arange(100)).join()
    with pytest.raises(ValueError, match="truncated"):
        loads(data[:-50])


def test_object_refs_encode_and_decode() -> None:
    """Breaks if an ObjectRef does not survive encoding, or garbage decodes as one."""
    ref = ObjectRef(endpoint="tcp://h:8082", key="a/s/o", version=3)
    assert ObjectRef.decode(ref.encode()) == ref
    with pytest.raises(FlameError, match="not an encoded ObjectRef"):
        ObjectRef.decode(b"not a ref")


def test_local_copies_are_found_by_stamp_version_and_size(tmp_path: Path) -> None:
    """A copy is used only for exactly the part the cache names current: another stamp,
    version or size is a miss, never a wrong object."""
    copies = LocalCopies(tmp_path, max_bytes=1 << 20)
    copies.store("a/s/o", 7, 1, True, [b"base-", memoryview(b"one")])
    view = copies.open("a/s/o", 7, 1, 8, True)
    assert view is not None
    assert bytes(view) == b"base-one"
    view[0:1] = b"B"  # copy-on-write: the file is untouched
    assert bytes(copies.open("a/s/o", 7, 1, 8, True) or b"") == b"base-one"
    assert copies.open("a/s/o", 8, 1, 8, True) is None  # the object was created again
    assert copies.open("a/s/o", 7, 2, 8, True) is None
    assert copies.open("a/s/o", 7, 1, 9, True) is None
    copies.store("a/s/o", 7, 2, False, [b"delta"])
    copies.store("a/s/o", 7, 3, True, [b"new base"])  # supersedes the older base and delta
    names = sorted(p.name for p in copies.path("a/s/o", 7, 3, True).parent.iterdir())
    assert names == [f"{7:x}-b3.part"]


def test_local_copies_stay_within_their_budget(tmp_path: Path) -> None:
    """Breaks if node-local object copies grow past max_bytes, or the oldest are not the ones evicted."""
    copies = LocalCopies(tmp_path, max_bytes=2500)
    for i in range(5):
        copies.store(f"a/s/o{i}", 1, 1, True, [bytes(1000)])
        os.utime(copies.path(f"a/s/o{i}", 1, 1, True), (i, i))
    copies.store("a/s/last", 1, 1, True, [bytes(1000)])
    kept = sorted(p.parent.name for p in tmp_path.rglob("*.part"))
    assert len(kept) == 2
    assert copies.open("a/s/last", 1, 1, 1000, True) is not None
