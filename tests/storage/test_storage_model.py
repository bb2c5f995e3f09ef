"""Random histories of writes, snapshots, reopens and torn tails against a list model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flamed.storage import Storage

from .conftest import payload, segments

operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(min_value=1, max_value=12)),
        st.tuples(st.just("snapshot"), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0)),
        st.tuples(st.just("tear"), st.integers(min_value=1, max_value=400)),
    ),
    max_size=25,
)


def _open(state_dir: Path) -> Storage:
    return Storage.open(state_dir, fsync="never", segment_bytes=300)


def _recovered(storage: Storage, model: list[bytes], lost_at_most: int) -> list[bytes]:
    """Check what recovery gives against the model; return the model cut to what survived."""
    recovery = storage.recover()
    snapshot_seq = recovery.snapshot_seq
    if recovery.snapshot is not None:
        assert recovery.snapshot == str(snapshot_seq).encode()
    survived = snapshot_seq + recovery.records_replayed
    assert len(model) - lost_at_most <= survived <= len(model)
    assert list(recovery.records) == model[snapshot_seq:survived]
    assert recovery.last_seq == survived
    return model[:survived]


@pytest.mark.timeout(120)
@settings(max_examples=60, deadline=None)
@given(operations)
def test_recovery_matches_the_model(ops: list[tuple[str, int]]) -> None:
    """After any history, recovery yields exactly the committed records, minus only records of
    the last segment when its tail was torn; breaks if a repair, snapshot or rotation loses,
    duplicates or reorders records."""
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "state"
        storage = _open(state_dir)
        model: list[bytes] = []
        try:
            for op, arg in ops:
                if op == "write":
                    batch = [payload(len(model) + n) for n in range(arg)]
                    for item in batch:
                        storage.append(item)
                    storage.commit(0.0)
                    model += batch
                elif op == "snapshot":
                    storage.write_snapshot(str(storage.last_seq).encode())
                elif op == "reopen":
                    storage.close()
                    storage = _open(state_dir)
                    model = _recovered(storage, model, 0)
                else:
                    storage.close()
                    last = segments(state_dir)[-1]
                    in_last = len(model) - (int(last.name[4:24]) - 1)
                    data = last.read_bytes()
                    last.write_bytes(data[: max(20, len(data) - arg)])
                    storage = _open(state_dir)
                    model = _recovered(storage, model, max(0, in_last))
        finally:
            storage.close()
