"""Write errors in the session manager: a change that cannot be made durable is refused with
`StorageUnavailable`, memory stays equal to disk, reads are still served, writes work again when
the cause is gone, and a restart finds exactly what was acknowledged.

What would break: replies sent before the commit, memory keeping a change the log refused, or
the daemon stopping on a full disk."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flamed.storage import StorageError
from tests.durability.inprocess import InProcess


def create(in_process: InProcess, session_id: str, inputs: list[bytes]) -> dict[str, Any]:
    return in_process.call({"type": "CreateTasks", "session_id": session_id, "inputs": inputs})


def all_tasks(in_process: InProcess, session_id: str) -> list[dict[str, Any]]:
    """Every task of the session, following the `ListTasks` pages."""
    tasks: list[dict[str, Any]] = []
    cursor = 0
    while True:
        reply = in_process.call({"type": "ListTasks", "session_id": session_id, "cursor": cursor})
        tasks.extend(reply["tasks"])
        cursor = reply.get("next_cursor", 0)
        if not cursor:
            return tasks


@pytest.mark.timeout(60)
def test_injected_commit_failure_refuses_the_change_and_keeps_serving(
    in_process: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Breaks if a failed commit is acknowledged, leaves a watch behind, or stops the session manager serving
    once the disk works again."""
    manager = in_process.start()
    created = in_process.call({"type": "CreateSession", "session_id": "s", "spec": {"application": "flmping"}})
    assert created["type"] == "SessionReply", created
    assert create(in_process, "s", [b"a", b"b"])["task_ids"] == [1, 2]
    storage = manager.storage
    assert storage is not None
    real_commit = storage.commit

    def full_disk(now: float) -> None:
        storage._batch.clear()  # what the real commit does with a batch it could not write
        raise StorageError("cannot write to wal-1.log: No space left on device")

    monkeypatch.setattr(storage, "commit", full_disk)
    reply = in_process.call({"type": "CreateTasks", "session_id": "s", "inputs": [b"c"], "watch": True})
    assert reply["type"] == "Error", reply
    assert reply["code"] == "StorageUnavailable", reply
    assert "No space left on device" in reply["message"]
    assert "nothing was changed" in reply["message"]
    # The refused CreateTasks{watch} leaves no watch behind: task id 3 goes to the next task,
    # whose result must not be pushed under the failed request's id.
    assert len(manager.controller.watches) == 0
    reply = in_process.call({"type": "CreateSession", "session_id": "t", "spec": {"application": "flmping"}})
    assert reply["code"] == "StorageUnavailable", reply
    # Reads are served from a state equal to the disk: the refused changes are not there.
    session = in_process.call({"type": "GetSession", "session_id": "s"})["session"]
    assert session["pending"] == 2
    assert in_process.call({"type": "GetSession", "session_id": "t"})["code"] == "NotFound"
    assert in_process.call({"type": "GetStats"})["info"]["storage_write_failure"].startswith("cannot write")

    monkeypatch.setattr(storage, "commit", real_commit)  # space is back
    assert create(in_process, "s", [b"c"])["task_ids"] == [3]
    acknowledged = all_tasks(in_process, "s")
    in_process.stop()
    in_process.start()
    assert all_tasks(in_process, "s") == acknowledged
    assert [t["input"] for t in acknowledged] == [b"a", b"b", b"c"]


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.integration
@pytest.mark.root
@pytest.mark.timeout(120)
@pytest.mark.skipif(os.geteuid() != 0, reason="a small tmpfs needs root; the injected failure test covers the logic")
def test_real_full_disk_on_a_small_tmpfs(tmp_path: Path) -> None:
    """Breaks if, on a really full disk, a task is acknowledged without being durable, or memory and disk
    disagree after a restart."""
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        in_process = InProcess(disk / "state", snapshot_records=1_000_000)
        try:
            in_process.start()
            in_process.call({"type": "CreateSession", "session_id": "s", "spec": {"application": "flmping"}})
            acknowledged: list[bytes] = []
            refused = 0
            payload = os.urandom(60_000)
            for i in range(60):  # ~3.6 MB of inputs into 2 MB: the disk fills up
                data = payload + i.to_bytes(4, "big")
                reply = create(in_process, "s", [data])
                if reply["type"] == "TasksCreated":
                    assert reply["task_ids"] == [len(acknowledged) + 1]
                    acknowledged.append(data)
                else:
                    assert reply["code"] == "StorageUnavailable", reply
                    refused += 1
            assert refused > 0
            assert acknowledged
            tasks = all_tasks(in_process, "s")
            assert [t["input"] for t in tasks] == acknowledged  # memory == what was acknowledged
            # Space returns: the log holds all the disk, so make room by growing the tmpfs.
            subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
            reply = create(in_process, "s", [b"after"])
            assert reply["type"] == "TasksCreated", reply
            acknowledged.append(b"after")
            in_process.stop()
            in_process.start()
            tasks = all_tasks(in_process, "s")
            assert [t["input"] for t in tasks] == acknowledged
        finally:
            in_process.cleanup()
            shutil.rmtree(disk / "state", ignore_errors=True)
