"""A compactor that dies mid-write, for tests: `python -m tests.durability.stuck_compactor
<state dir> <record>` writes half a temporary snapshot file, as a real compactor does before
its fsync and rename, then waits to be killed without reporting."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from flamed.storage.durable import TMP_SUFFIX
from flamed.storage.snapshot import snapshot_name


def main(argv: list[str]) -> None:
    state_dir, seq = Path(argv[0]), int(argv[1])
    (state_dir / (snapshot_name(seq) + TMP_SUFFIX)).write_bytes(b"FLAMESNP" + b"\x00" * 1000)
    while True:
        signal.pause()


if __name__ == "__main__":
    main(sys.argv[1:])
