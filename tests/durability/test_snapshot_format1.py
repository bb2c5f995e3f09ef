"""Snapshots of formats 1 (one list per task field, before issue 17) and 2 (a list of tasks per
session, before the task columns) are still read:
an upgraded session manager starts from the snapshot the previous version left.

What would break: a restart after an upgrade refusing the state directory (or misreading it)."""

from __future__ import annotations

import msgspec
import pytest

from flamed.core import snapshot as snap
from flamed.core.state import ClusterState
from flamed.core.tasks import TaskEntry
from protocol.types import TaskState
from tests.durability.test_snapshot_roundtrip import canonical, scenario

_STATES = list(TaskState)


def format1(state: ClusterState) -> bytes:
    """`state` as the previous version wrote it (format 1, tasks in columns, no counts)."""
    current = snap.to_snapshot(state)
    for session in current.sessions:
        tasks = list(state.sessions[session.id].tasks)
        assert state.sessions[session.id].base == 0  # nothing expired: format 1 had no retention
        session.tasks = columns(tasks)
        session.columns = None
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


def format2(state: ClusterState) -> bytes:
    """`state` as the previous version wrote it (format 2: a list of `TaskEntry` per session)."""
    current = snap.to_snapshot(state)
    for session in current.sessions:
        session.entries = list(state.sessions[session.id].tasks)
        session.columns = None
    current.format = 2
    return msgspec.msgpack.encode(current)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(4))
def test_a_format_2_snapshot_rebuilds_the_same_state(seed: int) -> None:
    """Decoding format 2 (what the version before task columns wrote) gives the same state.
    Would break: the first restart after the upgrade."""
    h = scenario(seed)
    assert canonical(snap.decode_state(format2(h.state))) == canonical(h.state)
