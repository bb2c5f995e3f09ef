"""Snapshots by compaction, with real processes (issue 17): the loop closes its segment and
starts a compactor; the compactor's snapshot holds the state at its record; a compactor killed
mid-write, or a session manager killed while its compactor runs, loses nothing and leaves the
directory readable.

What would break: a snapshot serialised on the loop again (heartbeats wait for it), a
compactor's snapshot that does not hold the state at its record, a failed compactor counted as
a snapshot (segments deleted that the state still needs), its leftover file kept, or an
orphaned compactor writing into a directory another session manager owns."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from flamed.core.snapshot import decode_state, encode_state, to_snapshot
from flamed.storage.snapshot import list_snapshots, load_newest_snapshot
from tests.durability.inprocess import InProcess
from tests.support.daemons import Daemons
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def make_records(sm: InProcess, sessions: int, first: int = 0) -> None:
    """Two records per session."""
    for s in range(first, first + sessions):
        reply = sm.call({"type": "CreateSession", "session_id": f"s{s}", "spec": {"application": "flmping"}})
        assert reply["type"] == "SessionReply", reply
        reply = sm.call({"type": "CreateTasks", "session_id": f"s{s}", "inputs": [b"x" * 10] * 100})
        assert reply["type"] == "TasksCreated", reply


def wait_stats(sm: InProcess, key: str, at_least: float) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        stats: dict[str, Any] = sm.call({"type": "GetStats"})["stats"]
        return stats if stats.get(key, 0) >= at_least else None

    return wait_for(f"{key} >= {at_least}", reached, 30)


def test_a_compactor_writes_the_state_at_its_record(tmp_path: Path) -> None:
    """The snapshot file appears, complete (no .tmp left), holding exactly the state the daemon
    had at its record; the loop spent little on it. Would break: the compaction path losing the
    file, building another state than the loop's, or the bookkeeping after it."""
    sm = InProcess(tmp_path / "state", compact_in_child=True, snapshot_records=4)
    try:
        manager = sm.start()
        storage = manager.storage
        assert storage is not None
        at_begin: list[tuple[int, bytes]] = []
        begin = storage.begin_snapshot

        def begin_and_look() -> int:
            seq = begin()
            at_begin.append((seq, encode_state(manager.controller.state)))  # the loop's state then
            return seq

        storage.begin_snapshot = begin_and_look  # type: ignore[method-assign]
        make_records(sm, 2)
        stats = wait_stats(sm, "storage_snapshots", 1)
        assert stats["storage_last_snapshot_loop_ms"] <= stats["storage_last_snapshot_duration_ms"]
        assert "storage_last_snapshot_spawn_ms" in stats
        loaded, _ = load_newest_snapshot(sm.state_dir)
        assert loaded is not None
        seq, payload = at_begin[0]
        assert loaded.seq == seq
        assert to_snapshot(decode_state(loaded.payload)) == to_snapshot(decode_state(payload))
        assert not [p for p in sm.state_dir.iterdir() if p.name.endswith(".tmp")]
    finally:
        sm.cleanup()


def test_a_compactor_killed_mid_write_changes_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A compactor killed after writing half its temporary file: the failure is logged, no
    snapshot counted, the leftover removed; the next compaction works and a restart has it all.
    Would break: a dead compactor taken for a snapshot, or its half file left behind."""
    sm = InProcess(tmp_path / "state", compact_in_child=True, snapshot_records=4)
    try:
        manager = sm.start()
        manager.journal.compactor_module = "tests.durability.stuck_compactor"
        make_records(sm, 2)
        tmp = wait_for("the half-written snapshot", lambda: list(sm.state_dir.glob("*.snap.tmp")), 30)
        child = manager.journal._child
        assert child is not None
        with caplog.at_level(logging.ERROR, logger="flamed.session_manager"):
            os.kill(child.pid, signal.SIGKILL)

            def reported() -> bool:
                sm.call({"type": "Ping"})  # a loop turn: the journal reads the compactor's pipe
                return "killed by signal 9" in caplog.text

            wait_for("the failure reported", reported, 30)
        stats = sm.call({"type": "GetStats"})["stats"]
        assert stats["storage_snapshots"] == 0
        assert not tmp[0].exists()
        assert list_snapshots(sm.state_dir) == []
        manager.journal.compactor_module = "flamed.session_manager.compactor"
        make_records(sm, 2, first=2)
        wait_stats(sm, "storage_snapshots", 1)
        before = to_snapshot(manager.controller.state)
        sm.stop()
        after = sm.start()
        assert to_snapshot(after.controller.state) == before
    finally:
        sm.cleanup()


def compactors(daemons: Daemons) -> list[int]:
    found = []
    for pid in daemons.leftovers():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"flamed.session_manager.compactor" in cmdline:
            found.append(pid)
    return found


def holds_flock(pid: int) -> bool:
    """`pid` holds a flock (a compactor's only one is COMPACT.LOCK)."""
    return any(f" {pid} " in line and "FLOCK" in line for line in Path("/proc/locks").read_text().splitlines())


def test_a_session_manager_killed_while_compacting_restarts_with_the_same_state() -> None:
    """SIGKILL the session manager while its compactor runs (held stopped meanwhile), restart
    it at once: the same sessions and tasks; the orphaned compactor, let go again, gives up
    without writing; a later clean stop and restart still has it all. Would break: a compactor
    outliving its session manager and writing into the new one's directory, or a kill during
    compaction losing acknowledged records."""
    daemons = Daemons()
    daemons.config.write_text(daemons.config.read_text() + "[storage]\nsnapshot_records = 12\n")
    try:
        daemons.start_session_manager()
        daemons.wait_answering()
        with daemons.client() as client:
            for s in range(6):  # two records a session: a compaction is due after the 12th
                sid = f"s{s}"
                reply = client.call({"type": "CreateSession", "session_id": sid, "spec": {"application": "flmping"}})
                assert reply["type"] == "SessionReply", reply
                inputs = [b"%016d" % i for i in range(20_000)]
                reply = client.call({"type": "CreateTasks", "session_id": sid, "inputs": inputs})
                assert reply["type"] == "TasksCreated", reply
            pids = wait_for("a compactor running", lambda: compactors(daemons), 30)
            wait_for("the compactor holding COMPACT.LOCK", lambda: holds_flock(pids[0]), 30, interval=0.001)
            os.kill(pids[0], signal.SIGSTOP)
            upto = int(Path(f"/proc/{pids[0]}/cmdline").read_bytes().split(b"\0")[-2])
            daemons.procs["sm"].kill()
            daemons.procs["sm"].wait()
            daemons.start_session_manager()
            daemons.wait_answering()
        with daemons.client() as client:
            for s in range(6):
                reply = client.call({"type": "GetSession", "session_id": f"s{s}"})
                assert reply["type"] == "SessionReply", reply
                assert reply["session"]["pending"] == 20_000, reply
            # The new session manager's own compaction is refused while the old one holds the lock.
            wait_for("the second compactor refused", lambda: "another compactor is running" in daemons.log("sm"), 30)
        os.kill(pids[0], signal.SIGCONT)
        wait_for("the orphaned compactor to give up", lambda: pids[0] not in compactors(daemons), 60)
        assert upto not in [seq for seq, _ in list_snapshots(daemons.dir / "state")]
        assert not list((daemons.dir / "state").glob("*.tmp"))
        assert daemons.stop("sm") == 0
        daemons.start_session_manager()
        daemons.wait_answering()
        with daemons.client() as client:
            reply = client.call({"type": "GetSession", "session_id": "s5"})
            assert reply["session"]["pending"] == 20_000, reply
        assert daemons.stop("sm") == 0
    finally:
        daemons.cleanup()
