"""Bounded disk (issue 17): with retention, the state directory of a real session manager stays
flat while sessions keep coming and going, because expired data leaves the disk with the
snapshots (written by record count or by log size) and the segments they make unneeded.

What would break: expiry only in memory (the log keeps every expired task's input forever),
or snapshots only every `snapshot_records` records (big records fill the disk before that)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.daemons import Daemons, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SEGMENT = 256 * 1024
PAYLOAD = 4096  # bytes per task input
TASKS = 32  # per session: 128 KiB of inputs per session
SESSIONS = 400  # 50 MiB through the log


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def test_state_dir_stays_flat_while_closed_sessions_expire(daemons: Daemons) -> None:
    """400 sessions of 128 KiB each (50 MiB through the log), closed and expired: the state
    directory is no bigger in the second half of the run than in the first."""
    with daemons.config.open("a") as config:
        config.write(f"[storage]\nsegment_bytes = {SEGMENT}\nsnapshot_log_bytes = {SEGMENT}\n")
        config.write("[retention]\nmax_finished_tasks = 64\ncheck_interval = 0.05\n")
    daemons.start_session_manager()
    state = daemons.dir / "state"
    sizes: list[int] = []
    with daemons.client() as client:
        for n in range(SESSIONS):
            session_id = f"s{n}"
            reply = client.call({"type": "CreateSession", "session_id": session_id, "spec": {"application": "flmping"}})
            assert reply["type"] == "SessionReply", reply
            inputs = [bytes([n % 251]) * PAYLOAD] * TASKS
            assert (
                client.call({"type": "CreateTasks", "session_id": session_id, "inputs": inputs})["type"]
                == "TasksCreated"
            )
            # no executor manager: closing cancels the tasks, which count as finished
            assert client.call({"type": "CloseSession", "session_id": session_id})["type"] == "SessionReply"
            if n % 20 == 19:
                sizes.append(dir_bytes(state))

        def expired() -> bool | None:
            stats = client.call({"type": "GetStats"})["stats"]
            return stats["finished_tasks_held"] <= 64 or None

        wait_for("retention to catch up", expired)
        stats = client.call({"type": "GetStats"})["stats"]
    written = SESSIONS * TASKS * PAYLOAD
    assert stats["sessions_expired_total"] >= SESSIONS - 3, stats
    # Flat: it moves with the snapshots (two kept, and the log since the older), but the second
    # half of the run holds no more than the first did, and a small part of what went through.
    # What a snapshot holds depends on timing: the closed sessions not yet expired at that
    # moment (up to ~25 of 128 KiB with checks every 0.05 s while the client creates a session
    # every few ms), so the bound is a third of what went through; keeping expired data (in
    # memory or in the log) would reach all of it.
    half = len(sizes) // 2
    assert max(sizes[half:]) <= 2 * max(sizes[:half]), sizes
    assert max(sizes) < written / 3, (sizes, written)
