"""The compactor process: `python -m flamed.session_manager.compactor <state dir> <record>`.

Builds the snapshot of record `<record>` from the newest snapshot before it and the closed log
segments (`flamed.storage.compaction.read_for_compaction`), with the very code a restart uses
(`durability.state_from`, then `encode_state`), and writes it atomically. Started by the
session manager's journal with `posix_spawn` (see `flamed.storage.compaction` for why and for
the crash-safety rules); it reports one line on stdout: `ok <payload bytes>` or
`error <reason>`, and exits 0 or 1. It runs at a lower CPU priority than the session manager
(`compaction.NICENESS`, set by the bootstrap `spawn_compactor` runs it with).
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

from flamed.core.snapshot import encode_state
from flamed.session_manager.durability import state_from
from flamed.storage.compaction import CompactionLock, prune_covered, read_for_compaction
from flamed.storage.snapshot import write_snapshot_file
from flamed.storage.storage import SNAPSHOTS_KEPT


def compact(state_dir: Path, upto: int, parent: int | None = None) -> int:
    """Write the snapshot of record `upto` in `state_dir`; its payload size. Raises
    `StorageError` (or OSError) when it cannot; with `parent`, gives up before the rename if
    that process is gone (the session manager died: a late snapshot would be correct, but
    nobody waits for it)."""
    lock = CompactionLock.acquire(state_dir)
    try:
        recovery = read_for_compaction(state_dir, upto)
        state = state_from(recovery, state_dir)
        recovery.snapshot = None  # as big as the state on disk: let it go before encoding
        payload = encode_state(state)
        del state
        if parent is not None and os.getppid() != parent:
            raise RuntimeError("the session manager that started this compaction is gone")
        write_snapshot_file(state_dir, upto, payload)
        prune_covered(state_dir, SNAPSHOTS_KEPT)
        return len(payload)
    finally:
        lock.release()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("error usage: python -m flamed.session_manager.compactor <state dir> <record>", flush=True)
        return 2
    parent = os.getppid()
    gc.disable()  # millions of objects and no cycles: a collection would only rescan them
    try:
        size = compact(Path(argv[0]), int(argv[1]), parent)
    except Exception as exc:
        print(f"error {type(exc).__name__}: {exc}"[:4000], flush=True)
        return 1
    print(f"ok {size}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
