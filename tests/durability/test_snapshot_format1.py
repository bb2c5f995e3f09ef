"""Snapshots of format 1 (one column per task field, written before issue 17) are still read:
an upgraded session manager starts from the snapshot the previous version left.

What would break: a restart after an upgrade refusing the state directory (or misreading it)."""

from __future__ import annotations

import msgspec
import pytest

from flamed.core import snapshot as snap
from flamed.core.state import ClusterState, TaskEntry
from protocol.types import TaskState
from tests.durability.test_snapshot_roundtrip import canonical, scenario

_STATES = list(TaskState)


def format1(state: ClusterState) -> bytes:
    """`state` as the previous version wrote it (format 1, tasks in columns, no counts)."""
    current = snap.to_snapshot(state)
    for session in current.sessions:
        tasks = [t for t in session.entries if t is not None]
        assert len(tasks) == len(session.entries)  # nothing expired: format 1 had no retention
        session.tasks = columns(tasks)
        session.entries = []
        session.counts = {}
    current.format = 1
    return msgspec.msgpack.encode(current)


def columns(tasks: list[TaskEntry]) -> snap.TaskColumns:
    return snap.TaskColumns(
        state=[_STATES.index(t.state) for t in tasks],
        input=[t.input for t in tasks],
        output=[t.output for t in tasks],
        creation_time=[t.creation_time for t in tasks],
        start_time=[t.start_time for t in tasks],
        completion_time=[t.completion_time for t in tasks],
        attempt=[t.attempt for t in tasks],
        retry_count=[t.retry_count for t in tasks],
        executor_id=[t.executor_id for t in tasks],
        message=[t.message for t in tasks],
        events={t.id: list(t.events) for t in tasks if t.events},
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(4))
def test_a_format_1_snapshot_rebuilds_the_same_state(seed: int) -> None:
    """Decoding format 1 gives the state a format 2 snapshot gives (counts recomputed)."""
    h = scenario(seed)
    assert canonical(snap.decode_state(format1(h.state))) == canonical(h.state)


def test_an_unknown_format_is_refused_with_a_named_error() -> None:
    """A snapshot from a newer version is refused, saying which formats this one reads."""
    current = snap.to_snapshot(ClusterState())
    current.format = 99
    with pytest.raises(snap.SnapshotFormatError, match="format 99"):
        snap.decode_state(msgspec.msgpack.encode(current))
