"""Short seeded chaos runs against real daemons (the long soak is `bench/chaos.py`).

A session manager and three executor managers run a workload of short tasks (2% failing on
purpose, three sessions, bursts during outages) while a seeded schedule kills, freezes and
cuts off executor managers and kills and freezes the session manager, with outages below,
around and above detection and detection + drain. Afterwards the correctness invariants
must hold.

What would break: a task lost or left unfinished (I1), a task recorded twice or its result
changed after it was recorded (I2), a wrong output or a failure that is neither the task's
own nor the retry limit, retries past the limit, a node moving between states out of order
(I4), an executor manager holding other executors than the session manager says, or an
instance left behind (I5), an executor placed on a node that is not Ready (I7), a daemon
that dies by itself or does not stop cleanly on SIGTERM, a client call that hangs, or a
task future that fails with an error of the SDK's.

Re-executions (and which of issue 16's holes they match) are printed, not asserted: they
depend on timing. `FLAME_CHAOS_SEED=<n>` runs another seed; the output ends with the command
that reruns a seed with `bench/chaos.py`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from tests.chaos import report
from tests.chaos.plan import Settings, make_plan
from tests.chaos.runner import run_plan
from tests.recovery.netns import unavailable

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _seed(default: int) -> int:
    return int(os.environ.get("FLAME_CHAOS_SEED", default))


def run_and_check(settings: Settings) -> dict[str, Any]:
    plan = make_plan(settings)
    started = time.monotonic()
    evidence, _ = run_plan(plan, print)
    evidence.seconds = time.monotonic() - started
    result = report.build(evidence, hot_loop_cpu=0.5)
    summary = report.text(result)
    print(summary)
    broken = [c["name"] for c in result["invariants"] if c["asserted"] and not c["ok"]]
    assert not broken, f"invariants broken: {broken}\n{summary}"
    return result


@pytest.mark.root
def test_a_short_chaos_run_on_namespaced_hosts_keeps_every_invariant() -> None:
    """Three nodes, each in its own network namespace: partitions are real veth cuts. Seed 21
    draws every kind of fault (two partitions) in eight."""
    if (reason := unavailable()) is not None:
        pytest.skip(f"the namespaced chaos run {reason}")
    result = run_and_check(Settings(seed=_seed(21), tasks=1500, faults=8, netns=True))
    assert result["hosts"] == "network namespaces"


def test_a_short_chaos_run_on_loopback_keeps_every_invariant() -> None:
    """Three nodes on loopback, partitions simulated by SIGSTOP (what a machine without
    root gets). Seed 9 draws every kind of fault in five."""
    run_and_check(Settings(seed=_seed(9), tasks=800, faults=5, netns=False))
