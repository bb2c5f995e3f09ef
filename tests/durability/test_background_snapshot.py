"""Snapshots written by a forked child (issue 17): the loop forks, goes on serving, and does
the bookkeeping when the child reports; a failed child changes nothing but the log stays the
source of truth.

What would break: a snapshot serialised on the loop again (heartbeats wait for it), a child's
snapshot that does not hold the state at its record, or a failed child counted as a snapshot."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from flamed.core.snapshot import decode_state
from flamed.session_manager import journal
from flamed.storage.snapshot import list_snapshots, load_newest_snapshot
from tests.durability.inprocess import InProcess

pytestmark = pytest.mark.timeout(60)


def make_records(sm: InProcess, sessions: int) -> None:
    for s in range(sessions):
        reply = sm.call({"type": "CreateSession", "session_id": f"s{s}", "spec": {"application": "flmping"}})
        assert reply["type"] == "SessionReply", reply
        reply = sm.call({"type": "CreateTasks", "session_id": f"s{s}", "inputs": [b"x" * 10] * 100})
        assert reply["type"] == "TasksCreated", reply


def wait_stats(sm: InProcess, key: str, at_least: float) -> dict[str, float]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        stats: dict[str, float] = sm.call({"type": "GetStats"})["stats"]
        if stats.get(key, 0) >= at_least:
            return stats
    raise AssertionError(f"{key} never reached {at_least}")


def test_a_snapshot_is_written_by_a_child_and_holds_the_state_at_its_record(tmp_path: Path) -> None:
    """The snapshot file appears, complete (no .tmp left), holding a state the daemon had; the
    stats say how long the loop spent on it. Would break: the fork path losing the file or
    the bookkeeping after it."""
    sm = InProcess(tmp_path / "state", snapshot_records=5)
    try:
        manager = sm.start()
        make_records(sm, 4)
        stats = wait_stats(sm, "storage_snapshots", 1)
        assert "storage_last_snapshot_loop_ms" in stats
        assert stats["storage_last_snapshot_loop_ms"] <= stats["storage_last_snapshot_duration_ms"]
        loaded, _ = load_newest_snapshot(sm.state_dir)
        assert loaded is not None
        state = decode_state(loaded.payload)
        assert state.records_applied >= 1
        assert set(state.sessions) <= set(manager.controller.state.sessions)
        assert not [p for p in sm.state_dir.iterdir() if p.name.endswith(".tmp")]
    finally:
        sm.cleanup()


def test_a_failed_child_is_logged_and_not_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A child that fails is reported (logged with its reason), no snapshot is counted, and a
    restart recovers everything from the log. Would break: a failure taken for a snapshot
    (segments deleted that the state still needs)."""

    def broken(state: object) -> bytes:
        raise RuntimeError("cannot encode")

    monkeypatch.setattr(journal, "encode_state", broken)
    sm = InProcess(tmp_path / "state", snapshot_records=5)
    try:
        with caplog.at_level(logging.ERROR, logger="flamed.session_manager"):
            sm.start()
            make_records(sm, 4)
            deadline = time.monotonic() + 20
            while "cannot encode" not in caplog.text and time.monotonic() < deadline:
                sm.call({"type": "Ping"})
        assert "RuntimeError: cannot encode" in caplog.text
        assert sm.call({"type": "GetStats"})["stats"]["storage_snapshots"] == 0
        assert list_snapshots(sm.state_dir) == []
        monkeypatch.undo()  # the stop writes its snapshot in process
        sm.stop()
        sm.start()  # the log alone has it all
        assert sm.call({"type": "GetSession", "session_id": "s3"})["type"] == "SessionReply"
    finally:
        sm.cleanup()
