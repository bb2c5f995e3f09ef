"""Property tests of the frame layout: round trips and the torn-tail rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flamed.storage.framing import (
    encode_frames,
    encode_segment_header,
    iter_records,
    scan_frames,
)

payloads = st.lists(st.binary(min_size=1, max_size=64), max_size=20)


def _segment(first_seq: int, records: list[bytes]) -> bytes:
    return encode_segment_header(first_seq) + encode_frames(first_seq, records)


@pytest.mark.timeout(60)
@given(payloads, st.integers(min_value=1, max_value=2**40))
def test_frames_round_trip(records: list[bytes], first_seq: int) -> None:
    """Any list of non-empty payloads reads back unchanged; breaks if framing loses bytes."""
    data = _segment(first_seq, records)
    scan = scan_frames(data, first_seq)
    assert scan.damage is None
    assert scan.count == len(records)
    assert list(iter_records(data, scan.end)) == records


@pytest.mark.timeout(60)
@given(payloads, st.data())
def test_any_truncation_yields_a_prefix_and_a_torn_tail(records: list[bytes], data: st.DataObject) -> None:
    """Cutting a segment anywhere yields a prefix of its records and is classified as a torn
    tail, never as corruption; breaks if a crash mid-write could stop start-up."""
    full = _segment(1, records)
    cut = data.draw(st.integers(min_value=20, max_value=len(full)))
    scan = scan_frames(full[:cut], 1)
    assert list(iter_records(full, scan.end)) == records[: scan.count]
    boundaries = {20 + sum(8 + len(r) for r in records[:k]) for k in range(len(records) + 1)}
    if cut in boundaries:
        assert scan.damage is None
    else:
        assert scan.damage is not None
        assert scan.damage.torn


@pytest.mark.timeout(60)
@given(payloads, st.binary(min_size=1, max_size=200))
def test_junk_after_the_frames_is_a_torn_tail(records: list[bytes], junk: bytes) -> None:
    """Arbitrary bytes after the last frame are cut as a torn tail (they cannot verify as the
    next record); breaks if junk reads as records."""
    full = _segment(1, records) + junk
    scan = scan_frames(full, 1)
    assert scan.count == len(records)
    assert scan.damage is not None
    assert scan.damage.torn


@pytest.mark.timeout(60)
@given(st.lists(st.binary(min_size=1, max_size=64), min_size=2, max_size=20), st.data())
def test_frames_hidden_in_payloads_do_not_fool_the_scan(records: list[bytes], data: st.DataObject) -> None:
    """A payload that contains whole frames (a user's input could be a copy of a log) does not
    make a torn last record look like corruption, because a frame's CRC binds its record number;
    breaks if frames are checked without their number."""
    copied_log = _segment(1, records)
    records = [*records[:-1], b"prefix" + copied_log + records[-1]]
    full = _segment(1, records)
    cut = data.draw(st.integers(min_value=len(full) - len(records[-1]) + 6, max_value=len(full) - 1))
    scan = scan_frames(full[:cut], 1)
    assert scan.count == len(records) - 1
    assert scan.damage is not None
    assert scan.damage.torn
