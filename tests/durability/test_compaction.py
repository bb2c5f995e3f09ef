"""Compaction in process (issue 17): the snapshot a compactor builds from the previous snapshot
and the closed segments is the state the session manager held at that record, retention's
records included; it never runs twice at once, never reads past the closed segments, and gives
up when its session manager is gone.

What would break: a compactor that reads the active segment, loses a record between snapshot
and log, replays expiry differently from the loop, or writes a snapshot nobody asked for."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from flamed.core import records as r
from flamed.core.snapshot import decode_state, to_snapshot
from flamed.core.state import ClusterState
from flamed.session_manager.compactor import compact
from flamed.session_manager.durability import state_from
from flamed.storage import CorruptLogError, Storage, StorageError
from flamed.storage.compaction import CompactionLock, read_for_compaction
from flamed.storage.snapshot import list_snapshots, load_newest_snapshot
from protocol.types import Application, ApplicationSpec, ResourceRequirement, SessionSpec, TaskState

pytestmark = pytest.mark.timeout(60)

T0 = 1_760_000_000_000


class Loop:
    """What the journal does with records: apply, then append and commit."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.state = ClusterState()
        self.encode = msgspec.msgpack.Encoder().encode

    def commit(self, *records: r.AnyRecord) -> None:
        for record in records:
            self.state.apply(record)
            self.storage.append(self.encode(record))
        self.storage.commit(0.0)


def run_sessions(loop: Loop, first: int, count: int, tasks: int = 50) -> None:
    """`count` sessions s<first>.. with `tasks` tasks each, half of them finished; odd ones closed."""
    for n in range(first, first + count):
        sid = f"s{n}"
        loop.commit(r.SessionCreated(time=T0 + n, session_id=sid, spec=SessionSpec(application="a")))
        inputs: list[bytes | None] = [b"%016d" % i for i in range(tasks)]
        loop.commit(r.TasksCreated(time=T0 + n, session_id=sid, first_id=1, inputs=inputs))
        loop.commit(r.ExecutorCreated(time=T0 + n, executor_id=f"e{n}", node="n1", resreq=ResourceRequirement()))
        done = list(range(1, tasks // 2 + 1))
        loop.commit(r.TasksDispatched(time=T0 + n, session_id=sid, executor_id=f"e{n}", task_ids=done))
        finishes = [r.TaskFinish(task_id=i, state=TaskState.Succeed, output=b"out%d" % i) for i in done]
        loop.commit(r.TasksFinished(time=T0 + n + 1, session_id=sid, tasks=finishes))
        loop.commit(r.ExecutorRemoved(time=T0 + n + 1, executor_id=f"e{n}"))
        if n % 2:
            loop.commit(r.SessionClosed(time=T0 + n + 2, session_id=sid))


def start(state_dir: Path) -> Loop:
    storage = Storage.open(state_dir, fsync="never", segment_bytes=4096)
    loop = Loop(storage)
    app = Application(name="a", spec=ApplicationSpec(command="x"), creation_time=T0, version=1)
    loop.commit(r.ApplicationSaved(time=T0, application=app))
    return loop


def snapshot_state(state_dir: Path) -> ClusterState:
    loaded, _ = load_newest_snapshot(state_dir)
    assert loaded is not None
    return decode_state(loaded.payload)


def test_the_compacted_snapshot_is_the_state_at_its_record_retention_included(tmp_path: Path) -> None:
    """Sessions, tasks, an expired session and expired tasks of an open one: the compactor's
    snapshot equals the loop's state. Would break: expiry replayed differently by the compactor
    than applied by the loop (a restart from it would resurrect or lose tasks)."""
    loop = start(tmp_path)
    try:
        run_sessions(loop, 0, 6)
        loop.commit(r.SessionsExpired(time=T0 + 10, session_ids=["s1"], reason="closed_session_ttl"))
        loop.commit(r.TasksExpired(time=T0 + 10, session_id="s2", ranges=[(1, 10)], reason="max_finished_tasks"))
        seq = loop.storage.begin_snapshot()
        size = compact(tmp_path, seq)
        assert size > 0
        assert to_snapshot(snapshot_state(tmp_path)) == to_snapshot(loop.state)
        assert snapshot_state(tmp_path).sessions["s2"].was_expired(3)
        assert "s1" in snapshot_state(tmp_path).expired_sessions
    finally:
        loop.storage.close()


def test_the_next_compaction_starts_from_the_previous_snapshot(tmp_path: Path) -> None:
    """Two rounds with records after each: the second reads snapshot 1 plus the segments after
    it (not the active one), and the session manager's pruning then deletes what is covered.
    Would break: records between two snapshots lost, or the active segment read."""
    loop = start(tmp_path)
    try:
        run_sessions(loop, 0, 4)
        first = loop.storage.begin_snapshot()
        loop.storage.finish_snapshot(first, compact(tmp_path, first))
        run_sessions(loop, 4, 4)
        second = loop.storage.begin_snapshot()
        expected = to_snapshot(loop.state)
        before_segments = len(list(tmp_path.glob("wal-*.log")))
        run_sessions(loop, 8, 2)  # in the active segment: not the compactor's business
        recovery = read_for_compaction(tmp_path, second)
        assert recovery.snapshot_seq == first
        assert recovery.records_replayed == second - first
        size = compact(tmp_path, second)
        # the compactor deleted what snapshot 1 covers itself (not the session manager's loop)
        remaining = sorted(tmp_path.glob("wal-*.log"))
        assert int(remaining[0].name[4:24]) == first + 1  # what snapshot 1 covers went, whole
        assert len(remaining) < before_segments
        loop.storage.finish_snapshot(second, size)
        assert sorted(tmp_path.glob("wal-*.log")) == remaining
        assert to_snapshot(snapshot_state(tmp_path)) == expected
        assert [seq for seq, _ in list_snapshots(tmp_path)] == [first, second]
        assert loop.storage.stats()["last_snapshot_seq"] == second
    finally:
        loop.storage.close()
    # A restart from snapshot 2 plus the log after it: the state the loop had.
    with Storage.open(tmp_path, fsync="never") as storage:
        rebuilt = state_from(storage.recover(), tmp_path)
    assert to_snapshot(rebuilt) == to_snapshot(loop.state)


def test_a_second_compactor_is_refused(tmp_path: Path) -> None:
    """While one compactor holds COMPACT.LOCK another fails at once, writing nothing. Would
    break: two compactors racing on the same snapshot name."""
    loop = start(tmp_path)
    try:
        run_sessions(loop, 0, 2)
        seq = loop.storage.begin_snapshot()
        held = CompactionLock.acquire(tmp_path)
        try:
            with pytest.raises(StorageError, match="another compactor is running"):
                compact(tmp_path, seq)
        finally:
            held.release()
        assert list_snapshots(tmp_path) == []
        compact(tmp_path, seq)  # once released it works
        assert [s for s, _ in list_snapshots(tmp_path)] == [seq]
    finally:
        loop.storage.close()


def test_a_compactor_whose_session_manager_is_gone_writes_nothing(tmp_path: Path) -> None:
    """The parent pid it was started by is not its parent any more: no snapshot, no tmp file.
    Would break: a compactor outliving its session manager racing a new one's files."""
    loop = start(tmp_path)
    try:
        run_sessions(loop, 0, 2)
        seq = loop.storage.begin_snapshot()
        with pytest.raises(RuntimeError, match="is gone"):
            compact(tmp_path, seq, parent=-1)
        assert list_snapshots(tmp_path) == []
        assert not list(tmp_path.glob("*.tmp"))
    finally:
        loop.storage.close()


def test_records_missing_from_the_log_are_refused(tmp_path: Path) -> None:
    """A closed segment gone (deleted under the compactor): it fails instead of writing a
    snapshot without those records. Would break: a snapshot that silently lost records."""
    loop = start(tmp_path)
    try:
        run_sessions(loop, 0, 6)
        seq = loop.storage.begin_snapshot()
        with pytest.raises(CorruptLogError, match="ends at record"):
            read_for_compaction(tmp_path, seq + 5)
        segments = sorted(tmp_path.glob("wal-*.log"))
        assert len(segments) > 3
        segments[1].unlink()
        with pytest.raises(CorruptLogError, match="missing"):
            compact(tmp_path, seq)
        assert list_snapshots(tmp_path) == []
    finally:
        loop.storage.close()
