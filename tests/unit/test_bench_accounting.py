"""The side-by-side bench's arithmetic (bench/proc_tree.py, bench/compare.py): CPU per kind of
process from two /proc snapshots, and which way "Flame vs the best peer" points. A mistake here
would print a wrong figure next to Ray's and Dask's, with nothing else to catch it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from compare import table  # bench/ is not a package: its files are on the path above
from proc_tree import ProcessCpu, classifier, cpu_delta


def test_cpu_delta_counts_a_process_that_ended_through_its_parent_and_shares_add_up() -> None:
    """Breaks if an instance that ended and was reaped between the snapshots is lost (its whole
    life moves to its parent's cutime) or counted twice, or if the shares miss the total."""
    before = {
        1: ProcessCpu(1, "client", own=1.0, reaped=0.0),
        2: ProcessCpu(2, "executor managers", own=2.0, reaped=0.0),
        3: ProcessCpu(3, "instances", own=0.5, reaped=0.0),
    }
    after = {
        1: ProcessCpu(1, "client", own=1.5, reaped=0.0),
        2: ProcessCpu(2, "executor managers", own=2.25, reaped=0.75),  # 3 ended at 0.75 s, reaped
        4: ProcessCpu(4, "instances", own=0.125, reaped=0.0),  # new since
    }
    shares = cpu_delta(before, after)
    assert shares["total"] == 1.5 + 3.0 + 0.125 - 3.5
    assert shares["client"] == 0.5
    assert shares["executor managers"] == 0.25
    assert shares["instances"] == 0.125
    assert shares["reaped"] == 0.25  # what 3 spent after the first snapshot
    assert sum(v for k, v in shares.items() if k != "total") == shares["total"]


def test_classifier_names_the_root_by_pid_and_the_rest_by_the_first_matching_rule() -> None:
    """Breaks if the client's own process is classified by its command line, or a rule order
    that the Flame and Ray tables rely on (first match wins) changes."""
    classify = classifier([("session-manager", "session manager"), ("flamed", "other daemons")], "client", root=7)
    assert classify(7, "python -m flamed session-manager") == "client"
    assert classify(8, "python -m flamed session-manager --frontend x") == "session manager"
    assert classify(9, "python -m flamed executor-manager") == "other daemons"
    assert classify(10, "raylet") == "other"


def test_flame_vs_best_peer_is_above_one_when_flame_is_better_whichever_way_the_row_points() -> None:
    """Breaks if a lower-is-better row (latency, CPU, memory) is divided the wrong way round,
    which would print Flame's worst figures as its best."""
    _, rows = table(
        {
            "flame": {"noop_1": 20_000.0, "latency_p50_ms": 1.0},
            "ray": {"noop_1": 2_000.0, "latency_p50_ms": 1.5},
            "dask": {"noop_1": 500.0, "latency_p50_ms": 10.0},
        }
    )
    by_key = {row["key"]: row for row in rows}
    assert by_key["noop_1"]["flame_vs_best_peer"] == 10.0
    assert by_key["latency_p50_ms"]["flame_vs_best_peer"] == 1.5
    assert by_key["cpu_us_per_task"]["flame_vs_best_peer"] is None  # not measured: no ratio
