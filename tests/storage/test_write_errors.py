"""Write errors (disk full, file size limit, EIO): the batch fails and disk equals the state
before the batch."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from flamed.storage import Storage, StorageError

from .conftest import payload, segments, write

Open = Callable[..., Storage]


def _fail_after(limit: int, err: int) -> Callable[[int, bytes | memoryview], int]:
    """An os.write that writes `limit` more bytes in total (short writes), then fails."""
    real_write = os.write
    budget = [limit]

    def fake_write(fd: int, data: bytes | memoryview) -> int:
        if budget[0] <= 0:
            raise OSError(err, os.strerror(err))
        written = real_write(fd, bytes(data[: budget[0]]))
        budget[0] -= written
        return written

    return fake_write


@pytest.mark.timeout(30)
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_failed_write_leaves_the_log_as_before_the_batch(
    open_storage: Open, state_dir: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    """A write that fails part way is undone; later commits work once space returns; breaks if
    half a batch stays on disk (it would be replayed, or corrupt the next records)."""
    storage = open_storage(fsync="always")
    before = [payload(n) for n in range(5)]
    write(storage, before)
    (segment,) = segments(state_dir)
    on_disk = segment.read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", _fail_after(100, err))
        for n in range(20):
            storage.append(payload(100 + n))
        with pytest.raises(StorageError, match=rf"cannot append 20 records to .*{segment.name}.*not stored"):
            storage.commit(1.0)
    assert segment.read_bytes() == on_disk
    assert storage.last_seq == 5
    assert storage.stats()["commit_failures"] == 1
    write(storage, [b"space is back"])
    storage.close()
    assert list(open_storage().recover().records) == [*before, b"space is back"]


@pytest.mark.timeout(30)
def test_failed_segment_creation_keeps_the_old_segment(
    open_storage: Open, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full while rotating: no half-made segment is left and the log is unchanged."""
    storage = open_storage(segment_bytes=200)
    write(storage, [payload(n) for n in range(3)], batch=3)
    files = {p.name: p.read_bytes() for p in state_dir.iterdir() if p.name != "LOCK"}
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", _fail_after(0, errno.ENOSPC))
        storage.append(payload(3))
        with pytest.raises(StorageError, match="cannot create log segment"):
            storage.commit(0.0)
    assert {p.name: p.read_bytes() for p in state_dir.iterdir() if p.name != "LOCK"} == files
    write(storage, [payload(3)])
    storage.close()
    assert len(list(open_storage().recover().records)) == 4


@pytest.mark.timeout(30)
def test_failed_fsync_fails_the_batch_and_stops_writes(
    open_storage: Open, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed fsync the kernel may have dropped pages: the batch is cut off, and every
    later write is refused with advice to restart; breaks if we keep acknowledging writes."""
    storage = open_storage(fsync="always")
    write(storage, [payload(n) for n in range(3)])
    real_fsync = os.fsync
    calls = [0]

    def failing_fsync(fd: int) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", failing_fsync)
        storage.append(b"lost")
        with pytest.raises(StorageError, match=r"fsync .* failed"):
            storage.commit(0.0)
    storage.append(b"refused")
    with pytest.raises(StorageError, match="restart"):
        storage.commit(0.0)
    assert storage.stats()["poisoned"]
    storage.close()
    assert list(open_storage().recover().records) == [payload(n) for n in range(3)]


@pytest.mark.timeout(30)
def test_failed_snapshot_leaves_log_and_old_snapshot(
    open_storage: Open, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full while writing a snapshot: no partial snapshot, the log still holds everything."""
    storage = open_storage()
    write(storage, [payload(n) for n in range(4)])
    storage.write_snapshot(b"at 4")
    write(storage, [payload(n) for n in range(4, 8)])
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", _fail_after(10, errno.ENOSPC))
        with pytest.raises(StorageError, match="cannot write the snapshot of record 8"):
            storage.write_snapshot(b"x" * 1000)
    assert not list(state_dir.glob("*.tmp"))
    storage.close()
    recovery = open_storage().recover()
    assert recovery.snapshot == b"at 4"
    assert list(recovery.records) == [payload(n) for n in range(4, 8)]


_FSIZE_SCRIPT = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from flamed.storage import Storage, StorageError

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    storage = Storage.open(Path(sys.argv[1]), fsync="always", segment_bytes=1 << 30)
    for n in range(10):
        storage.append(b"before-%03d" % n)
    storage.commit(0.0)
    limit = storage.stats()["log_bytes"] + 500
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    for n in range(100):
        storage.append(b"x" * 100)
    try:
        storage.commit(1.0)
    except StorageError as exc:
        print("refused:", exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    storage.append(b"after")
    storage.commit(2.0)
    storage.close()
    """
)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_file_size_limit_in_a_real_process(state_dir: Path) -> None:
    """A real short write (RLIMIT_FSIZE) in a separate process: the batch is refused and undone,
    the next commit succeeds; breaks if a partial batch survives on disk."""
    result = subprocess.run(
        [sys.executable, "-c", _FSIZE_SCRIPT, str(state_dir)], capture_output=True, text=True, timeout=50, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "refused: cannot append 100 records" in result.stdout
    with Storage.open(state_dir) as storage:
        records = list(storage.recover().records)
    assert records == [b"before-%03d" % n for n in range(10)] + [b"after"]
