"""CPU and memory of a whole process tree, read from /proc, for the benches' side-by-side runs.

A framework's cost per task is the CPU of every process it runs (client, scheduler, workers,
daemons), not only the client's. `snapshot(root, classify)` reads, for the root and all its
descendants, each process's own CPU (utime+stime) and the CPU of its children it has reaped
(cutime+cstime), with a kind named by `classify`. Between two snapshots:

- the total is the sum of own + reaped CPU over the tree, after minus before: a process that
  ended and was reaped in between still counts (its parent's cutime holds its whole life);
- a kind's share is the growth of its live processes' own CPU; what processes that ended in
  between spent is reported as `reaped`, so the shares add up to the total.

`profile_all_threads` runs cProfile on every thread a block starts (a client's I/O thread does
most of its work), and `SITECUSTOMIZE` does the same for a daemon started with it on its path;
both time with each thread's CPU clock, so a blocking wait (poll, a lock) costs what it really
costs in CPU, not the wall time it waited.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessCpu:
    pid: int
    kind: str
    own: float  # seconds: utime + stime
    reaped: float  # seconds: cutime + cstime (its ended children)


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def descendants(root: int) -> list[int]:
    """`root` and every process below it, parents first."""
    tree, i = [root], 0
    while i < len(tree):
        tree += children(tree[i])
        i += 1
    return tree


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def read_cpu(pid: int) -> tuple[float, float] | None:
    """(own, reaped children) CPU seconds of `pid`, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is the state
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


Classify = Callable[[int, str], str]


def classifier(rules: list[tuple[str, str]], root_kind: str, root: int | None = None) -> Classify:
    """A `classify(pid, cmdline)`: `root_kind` for `root` (default: this process), else the kind
    of the first rule whose text the command line contains, else "other"."""
    me = os.getpid() if root is None else root

    def classify(pid: int, command: str) -> str:
        if pid == me:
            return root_kind
        return next((kind for text, kind in rules if text in command), "other")

    return classify


def snapshot(classify: Classify, root: int | None = None) -> dict[int, ProcessCpu]:
    """The CPU so far of `root` (default: this process) and all its descendants."""
    out: dict[int, ProcessCpu] = {}
    for pid in descendants(os.getpid() if root is None else root):
        cpu = read_cpu(pid)
        if cpu is not None:
            out[pid] = ProcessCpu(pid, classify(pid, cmdline(pid)), *cpu)
    return out


def cpu_delta(before: dict[int, ProcessCpu], after: dict[int, ProcessCpu]) -> dict[str, float]:
    """Seconds of CPU per kind between two snapshots, with `reaped` (processes that ended in
    between) and `total` (see the module docstring)."""

    def whole(snap: dict[int, ProcessCpu]) -> float:
        return sum(p.own + p.reaped for p in snap.values())

    shares: dict[str, float] = {}
    for pid, now in after.items():
        then = before.get(pid)
        shares[now.kind] = shares.get(now.kind, 0.0) + now.own - (then.own if then else 0.0)
    total = whole(after) - whole(before)
    shares["reaped"] = total - sum(shares.values())
    shares["total"] = total
    return shares


def kind_pids(classify: Classify, kinds: set[str], root: int | None = None) -> list[int]:
    return [pid for pid in descendants(os.getpid() if root is None else root) if classify(pid, cmdline(pid)) in kinds]


# ----------------------------------------------------------------------------------- profiles


@contextmanager
def profile_all_threads() -> Iterator[list[cProfile.Profile]]:
    """cProfile this thread and every thread started inside the block; the profiles are in the
    yielded list (a thread's is complete once it has ended)."""
    profiles: list[cProfile.Profile] = []

    def start() -> None:
        profile = cProfile.Profile(time.thread_time)  # CPU, not wall time: blocking waits cost nothing
        profiles.append(profile)
        profile.enable()

    def on_new_thread(*_: Any) -> None:
        sys.setprofile(None)  # the hook only switches the new thread over to cProfile
        start()

    threading.setprofile(on_new_thread)
    start()
    try:
        yield profiles
    finally:
        profiles[0].disable()
        threading.setprofile(None)  # type: ignore[arg-type,unused-ignore]  # None unsets it; typeshed varies


def write_profile(stats: pstats.Stats, path: Path, top: int = 15) -> str:
    """Dump `stats` to `path` (.prof) and a text summary next to it (.txt); return the top
    `top` functions by own time as text."""
    stats.dump_stats(str(path))
    for sort, name in (("tottime", "tottime"), ("cumulative", "cumulative")):
        text = io.StringIO()
        pstats.Stats(str(path), stream=text).sort_stats(sort).print_stats(60)
        path.with_suffix(f".{name}.txt").write_text(text.getvalue())
    text = io.StringIO()
    pstats.Stats(str(path), stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


#: A sitecustomize.py that profiles a daemon whose command line contains $FLAME_BENCH_PROFILE_MATCH
#: for its whole life and writes $FLAME_BENCH_PROFILE_DIR/<match>-<pid>.prof when it exits
#: normally (the session manager does on SIGTERM). Single-threaded daemons only.
SITECUSTOMIZE = """\
import atexit, cProfile, os, sys, time
_match = os.environ.get("FLAME_BENCH_PROFILE_MATCH", "")
if _match and _match in sys.argv:
    _profile = cProfile.Profile(time.thread_time)
    def _dump():
        _profile.disable()
        _profile.dump_stats(os.path.join(os.environ["FLAME_BENCH_PROFILE_DIR"], f"{_match}-{os.getpid()}.prof"))
    atexit.register(_dump)
    _profile.enable()
"""
