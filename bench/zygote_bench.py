"""What an instance's start costs: forked by the zygote against plain exec (issue 21).

Each sample starts `python -m flamed.apps.flmping` with an executor manager's environment (a
ROUTER bound here plays the executor manager's instance socket) and times it from the start to
the instance's `InstanceReady` read from that socket: the interpreter (exec only), the imports
(exec only), the service module, the connection and the first message. The instance is then
killed. The two ways alternate sample by sample:

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
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flamed.executor_manager.zygote import Zygote  # noqa: E402 - after the path is set
from flamed.lifeline import parent_death_signal  # noqa: E402
from flamed.transport import Socket, bind_router  # noqa: E402
from protocol import codec  # noqa: E402
from protocol import instance as im  # noqa: E402

READY_TIMEOUT = 30.0


def ready(router: Socket, token: bytes) -> None:
    """Wait for the instance of `token` to say InstanceReady."""
    messages = codec.instance_message_codec()
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if not router.poll(100):
            continue
        frames = router.recv_multipart()
        if frames[0] == token and isinstance(messages.decode(frames[1:]), im.InstanceReady):
            return
    raise SystemExit("an instance did not say InstanceReady")


def kill(pid: int) -> None:
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "zygote.json"))
    args = parser.parse_args()
    argv = [sys.executable, "-m", "flamed.apps.flmping"]
    base = Path(tempfile.mkdtemp(prefix="zbench-", dir="/tmp"))  # ipc paths must be short
    cwd = base / "work"
    cwd.mkdir()
    endpoint = f"ipc://{base}/instances"
    router = bind_router(endpoint, handover=True)
    os.environ["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")  # the zygote starts with the same startup env
    template = {k: v for k, v in os.environ.items() if not k.startswith("FLAME_")}
    template.update(FLAME_INSTANCE_ENDPOINT=endpoint, FLAME_EXECUTOR_ID="e-bench", FLAME_PYTHON=sys.executable)

    def env() -> tuple[dict[str, str], bytes]:
        token = "i-" + secrets.token_hex(16)
        return {**template, "FLAME_INSTANCE_TOKEN": token}, token.encode()

    def by_exec() -> int:
        environment, token = env()
        process = subprocess.Popen(
            argv,
            env=environment,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=parent_death_signal(signal.SIGKILL),  # noqa: PLW1509 - as instances.py
        )
        ready(router, token)
        return process.pid

    waits: list[float] = []

    def by_zygote() -> int:
        environment, token = env()
        started = time.perf_counter()
        pid = zygote.spawn(argv, environment, cwd)
        waits.append((time.perf_counter() - started) * 1000)
        if pid is None:
            raise SystemExit("the zygote went down")
        ready(router, token)
        return pid

    def timed(start: Callable[[], int], into: list[float]) -> None:
        started = time.perf_counter()
        pid = start()
        into.append((time.perf_counter() - started) * 1000)
        kill(pid)
        time.sleep(0.02)  # the zygote forks its next spare meanwhile, as between binds

    zygote = Zygote(endpoint)
    execs: list[float] = []
    forks: list[float] = []
    try:
        deadline = time.monotonic() + 30
        environment, token = env()
        while (pid := zygote.spawn(argv, environment, cwd)) is None:  # the first starts the zygote
            if time.monotonic() > deadline:
                raise SystemExit("the zygote did not come up")
            time.sleep(0.05)
        ready(router, token)
        kill(pid)
        waits.clear()
        for _ in range(args.samples):
            timed(by_exec, execs)
            timed(by_zygote, forks)
    finally:
        zygote.close()
        router.close(linger=0)
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        # the machine may be shared: its load average (1, 5, 15 minutes) at this point of the run
        "load_average": os.getloadavg(),
        "samples": args.samples,
        "exec_start_to_ready_ms": statistics.median(execs),
        "zygote_start_to_ready_ms": statistics.median(forks),
        "zygote_start_to_ready_p90_ms": sorted(forks)[int(len(forks) * 0.9)],
        "zygote_spawn_wait_ms": statistics.median(waits),
    }
    print(
        f"start to InstanceReady of flmping (median of {args.samples}): "
        f"exec {result['exec_start_to_ready_ms']:.1f} ms, "
        f"zygote {result['zygote_start_to_ready_ms']:.1f} ms (p90 {result['zygote_start_to_ready_p90_ms']:.1f}; "
        f"the caller waits {result['zygote_spawn_wait_ms']:.2f} ms for the pid); load {os.getloadavg()[0]:.1f}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
