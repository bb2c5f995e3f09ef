"""Restart in process: what a session manager acknowledged is there after it reopens its state
directory, whether the state comes from the log alone or from a snapshot plus the log.

What would break: records not appended in `_flush`, a snapshot missing a field, or a recovery
that does not replay records written after the newest snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.durability.inprocess import InProcess


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[InProcess]:
    process = InProcess(tmp_path / "state", snapshot_records=5)
    try:
        yield process
    finally:
        process.cleanup()


def views(in_process: InProcess) -> dict[str, Any]:
    sessions = in_process.call({"type": "ListSessions"})["sessions"]
    tasks = {s["id"]: in_process.call({"type": "ListTasks", "session_id": s["id"]})["tasks"] for s in sessions}
    apps = in_process.call({"type": "ListApplications"})["applications"]
    return {"sessions": sessions, "tasks": tasks, "applications": apps}


@pytest.mark.timeout(60)
def test_state_survives_a_clean_restart_with_snapshots(in_process: InProcess) -> None:
    """Breaks if sessions, tasks or applications differ after a clean stop and restart with snapshots written
    along the way."""
    in_process.start()
    for s in range(3):
        reply = in_process.call({"type": "CreateSession", "session_id": f"s{s}", "spec": {"application": "flmping"}})
        assert reply["type"] == "SessionReply", reply
        for batch in range(4):
            inputs = [f"{s}/{batch}/{i}".encode() for i in range(50)]
            reply = in_process.call({"type": "CreateTasks", "session_id": f"s{s}", "inputs": inputs})
            assert reply["type"] == "TasksCreated", reply
    assert in_process.call({"type": "CloseSession", "session_id": "s2"})["type"] == "SessionReply"
    before = views(in_process)
    stats = in_process.call({"type": "GetStats"})
    assert stats["info"]["storage_state_dir"] == str(in_process.state_dir)
    assert stats["stats"]["storage_snapshots"] >= 1  # snapshot_records=5: several were written
    in_process.stop()

    manager = in_process.start()
    assert manager.recovered is not None
    after = views(in_process)
    assert after == before
    assert sum(len(t) for t in after["tasks"].values()) == 600
    assert {t["input"] for t in after["tasks"]["s1"]} == {f"1/{b}/{i}".encode() for b in range(4) for i in range(50)}


@pytest.mark.timeout(60)
def test_state_survives_without_a_clean_stop(tmp_path: Path) -> None:
    """No snapshot at close: the storage is dropped without `SessionManager.close` writing one."""
    in_process = InProcess(tmp_path / "state")
    try:
        manager = in_process.start()
        in_process.call({"type": "CreateSession", "session_id": "s", "spec": {"application": "flmping"}})
        in_process.call({"type": "CreateTasks", "session_id": "s", "inputs": [b"a", None, b"c"]})
        before = views(in_process)
        assert manager.storage is not None
        manager.storage.close()  # what a crash leaves: the log, no final snapshot
        manager.storage = None
        in_process.stop()
        manager = in_process.start()
        assert manager.recovered is not None
        assert manager.recovered.snapshot_seq == 0
        assert manager.recovered.records_replayed >= 3
        assert views(in_process) == before
    finally:
        in_process.cleanup()


TOTALS = ("sessions_created_total", "tasks_created_total", "tasks_cancelled_total", "tasks_completed_total")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("crash", [False, True])
def test_get_stats_totals_go_on_across_a_restart(tmp_path: Path, crash: bool) -> None:
    """Breaks if GetStats' task and session totals restart from 0 with the session manager (they
    were process counters), or lose a deleted session's tasks, whether the state comes back
    from a snapshot plus the log or from the log alone."""
    in_process = InProcess(tmp_path / "state", snapshot_records=100_000 if crash else 5)
    try:
        manager = in_process.start()
        for s in range(3):
            in_process.call({"type": "CreateSession", "session_id": f"s{s}", "spec": {"application": "flmping"}})
            in_process.call({"type": "CreateTasks", "session_id": f"s{s}", "inputs": [b"x"] * 20})
        in_process.call({"type": "CloseSession", "session_id": "s2"})  # its 20 pending tasks are cancelled
        assert in_process.call({"type": "DeleteSession", "session_id": "s2"})["type"] == "SessionReply"
        before = in_process.call({"type": "GetStats"})["stats"]
        assert [before[k] for k in TOTALS] == [3, 60, 20, 0]
        if crash:  # what a crash leaves: the log, no snapshot
            assert manager.storage is not None
            manager.storage.close()
            manager.storage = None
        in_process.stop()

        manager = in_process.start()
        assert manager.recovered is not None
        assert (manager.recovered.snapshot_seq == 0) is crash
        after = in_process.call({"type": "GetStats"})["stats"]
        assert [after[k] for k in TOTALS] == [3, 60, 20, 0]
        in_process.call({"type": "CreateSession", "session_id": "s3", "spec": {"application": "flmping"}})
        in_process.call({"type": "CreateTasks", "session_id": "s3", "inputs": [b"y"] * 5})
        more = in_process.call({"type": "GetStats"})["stats"]
        assert (more["sessions_created_total"], more["tasks_created_total"]) == (4, 65)
    finally:
        in_process.cleanup()
