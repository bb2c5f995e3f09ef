"""What an instance's start costs: forked by the zygote against plain exec (issue 21).

Each sample starts `python -m flamed.apps.flmping` without an executor manager's environment,
so it imports everything a service needs, finds no endpoint and exits: the time from the start
to its exit is the start's cost (interpreter, imports, service module). The two ways alternate
sample by sample:

- exec: `subprocess.Popen` as instances.py does (own session, PDEATHSIG);
- zygote: `Zygote.spawn` (flamed/executor_manager/zygote.py), which also reports how long the
  caller (the executor manager's loop) waits for the pid.

    python bench/zygote_bench.py [--samples 40]

Prints medians and writes bench/results/zygote.json with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flamed.executor_manager.zygote import Zygote  # noqa: E402 - after the path is set
from flamed.lifeline import parent_death_signal  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "zygote.json"))
    args = parser.parse_args()
    argv = [sys.executable, "-m", "flamed.apps.flmping"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAME_")}
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # the zygote starts with the same startup env
    cwd = Path(tempfile.mkdtemp(prefix="zbench-"))
    # The service's "not started by an executor manager" traceback, twice a sample: not shown.
    saved_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    zygote = Zygote("ipc:///nowhere")
    execs: list[float] = []
    forks: list[float] = []
    waits: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while (pid := zygote.spawn(argv, env, cwd)) is None:  # the first starts the zygote
            if time.monotonic() > deadline:
                raise SystemExit("the zygote did not come up")
            time.sleep(0.05)
        os.waitpid(pid, 0)
        for _ in range(args.samples):
            started = time.perf_counter()
            process = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=parent_death_signal(signal.SIGKILL),  # noqa: PLW1509 - as instances.py
            )
            process.wait()
            execs.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            pid = zygote.spawn(argv, env, cwd)
            waited = time.perf_counter()
            if pid is None:
                raise SystemExit("the zygote went down")
            os.waitpid(pid, 0)
            forks.append((time.perf_counter() - started) * 1000)
            waits.append((waited - started) * 1000)
    finally:
        zygote.close()
        os.dup2(saved_stderr, 2)
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        # the machine may be shared: its load average (1, 5, 15 minutes) at this point of the run
        "load_average": os.getloadavg(),
        "samples": args.samples,
        "exec_start_to_exit_ms": statistics.median(execs),
        "zygote_start_to_exit_ms": statistics.median(forks),
        "zygote_spawn_wait_ms": statistics.median(waits),
    }
    print(
        f"start to exit of flmping (median of {args.samples}): exec {result['exec_start_to_exit_ms']:.1f} ms, "
        f"zygote {result['zygote_start_to_exit_ms']:.1f} ms (the caller waits {result['zygote_spawn_wait_ms']:.2f} ms)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
