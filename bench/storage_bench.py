"""Throughput of the write-ahead log, and the time to reopen a log of N records.

For each fsync policy (always / interval / never) and batch size (records per commit: 1, 64,
1024) it appends records of about 200 bytes and prints records/s and MB/s; then it times
`Storage.open` + replay of the largest log written. Results go to bench/results/storage.json
with the machine they ran on. Runs with `fsync=always` are capped at `--max-fsyncs` commits
(each costs one fsync, which is what is being measured).

    python bench/storage_bench.py            # full run
    python bench/storage_bench.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from flamed.storage import FsyncPolicy, Storage

RECORD_BYTES = 200
POLICIES: tuple[FsyncPolicy, ...] = ("always", "interval", "never")
BATCHES = (1, 64, 1024)


def make_records(count: int) -> list[bytes]:
    # ~200 bytes like an encoded task record: varying id, fixed-size body
    return [(f"task-{n:012d}:".encode() + os.urandom(8).hex().encode()).ljust(RECORD_BYTES, b".") for n in range(count)]


def run_writes(state_dir: Path, policy: FsyncPolicy, batch: int, records: list[bytes]) -> dict[str, Any]:
    shutil.rmtree(state_dir, ignore_errors=True)
    storage = Storage.open(state_dir, fsync=policy, fsync_interval=1.0)
    started = time.perf_counter()
    for start in range(0, len(records), batch):
        for record in records[start : start + batch]:
            storage.append(record)
        storage.commit(time.monotonic())
    elapsed = time.perf_counter() - started
    stats = storage.stats()
    storage.close()
    written = int(stats["bytes_written"])
    return {
        "policy": policy,
        "batch": batch,
        "records": len(records),
        "seconds": round(elapsed, 4),
        "records_per_s": round(len(records) / elapsed),
        "mb_per_s": round(written / elapsed / 1e6, 2),
        "fsyncs": stats["fsyncs"],
        "max_fsync_ms": round(float(stats["max_fsync_latency_ms"]), 3),
    }


def run_reopen(state_dir: Path, records: list[bytes], batch: int) -> dict[str, Any]:
    shutil.rmtree(state_dir, ignore_errors=True)
    with Storage.open(state_dir, fsync="never") as storage:
        for start in range(0, len(records), batch):
            for record in records[start : start + batch]:
                storage.append(record)
            storage.commit(0.0)
        log_bytes = storage.stats()["log_bytes"]
    started = time.perf_counter()
    with Storage.open(state_dir, fsync="never") as storage:
        replayed = sum(1 for _ in storage.recover().records)
    elapsed = time.perf_counter() - started
    assert replayed == len(records)
    return {"records": replayed, "log_bytes": log_bytes, "seconds": round(elapsed, 3)}


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000, help="records per run (default 200000)")
    parser.add_argument("--max-fsyncs", type=int, default=2000, help="cap on commits for fsync=always")
    parser.add_argument("--reopen-records", type=int, default=1_000_000, help="log size for the reopen timing")
    parser.add_argument("--quick", action="store_true", help="small figures in a few seconds")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir under bench/)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "storage.json")
    args = parser.parse_args()
    if args.quick:
        args.records, args.max_fsyncs, args.reopen_records = 20_000, 200, 100_000

    base = Path(tempfile.mkdtemp(prefix="storage-bench-", dir=args.dir or Path(__file__).parent))
    try:
        records = make_records(max(args.records, args.reopen_records))
        writes = []
        print(f"{'fsync':<9}{'batch':>6}{'records':>10}{'records/s':>12}{'MB/s':>8}{'fsyncs':>8}{'max fsync ms':>14}")
        for policy in POLICIES:
            for batch in BATCHES:
                count = args.records
                if policy == "always":
                    count = min(count, args.max_fsyncs * batch)
                row = run_writes(base / "state", policy, batch, records[:count])
                writes.append(row)
                print(
                    f"{policy:<9}{batch:>6}{row['records']:>10}{row['records_per_s']:>12}"
                    f"{row['mb_per_s']:>8}{row['fsyncs']:>8}{row['max_fsync_ms']:>14}"
                )
        reopen = run_reopen(base / "state", records[: args.reopen_records], 1024)
        print(
            f"reopen + replay of {reopen['records']} records ({reopen['log_bytes'] / 1e6:.0f} MB): "
            f"{reopen['seconds']} s"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result = {
        "machine": machine(),
        "quick": args.quick,
        "record_bytes": RECORD_BYTES,
        "writes": writes,
        "reopen": reopen,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
