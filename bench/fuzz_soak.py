"""Soak a real cluster in hostile frames: at least a million, on every door, and nothing may change.

A session manager and one executor manager (node n1) run as subprocesses on ipc:// endpoints
(tests/integration/daemons.py), with a baseline the fuzz must not touch (an application and a
closed session with tasks, tests/security/fuzzing.py). Then `--frames` messages from
`HostileFrames` (tests/security/hostile_frames.py: deep nesting up to 20,000 levels, headers
claiming GiBs, every MessagePack type, truncations, wrong frame counts, bad headers, random
bytes) go to the session manager's frontend and backend and to the executor manager's instance
socket (from this process, which is no instance), and `--from-instances` more are sent by real
instances under their own token (each is killed for it). Afterwards: 0 daemon exits (the same
two processes), the baseline and the node's state unchanged, the bad frames counted, and the
cluster still runs a task. Prints the count, time and rate, and each daemon's memory.

    python bench/fuzz_soak.py                       # 1,000,000 frames, a few minutes
    python bench/fuzz_soak.py --frames 20000        # a quick look

Writes bench/results/fuzz_soak.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.daemons import Daemons, RawClient, wait_for  # noqa: E402 - after the path is set
from tests.security import fuzzing  # noqa: E402
from tests.security.hostile_frames import HostileFrames  # noqa: E402

#: Share of the frames each door gets.
SHARES = {"frontend": 0.4, "backend": 0.4, "instance": 0.2}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_task(client: RawClient, session_id: str) -> str:
    """One flmping task in a new session; its final state."""
    created = client.call({"type": "CreateSession", "session_id": session_id, "spec": {"application": "flmping"}})
    assert created["type"] == "SessionReply", created
    assert client.call({"type": "CreateTasks", "session_id": session_id, "inputs": [b"ok"]})["type"] == "TasksCreated"

    def finished() -> str | None:
        state = str(client.call({"type": "GetTask", "session_id": session_id, "task_id": 1})["task"]["state"])
        return state if state in ("Succeed", "Failed") else None

    return wait_for("the task", finished, timeout=60)


def counters(client: RawClient) -> dict[str, float]:
    stats = client.call({"type": "GetStats"})["stats"]
    return {k: v for k, v in stats.items() if any(w in k for w in ("bad", "reject", "refus", "stale", "imperson"))}


def soak(daemons: Daemons, args: argparse.Namespace) -> dict[str, Any]:
    sm = daemons.start_session_manager()
    with daemons.client() as client:
        fuzzing.prepare(client)
        node = daemons.start_executor_manager("n1", 2)
        daemons.wait_ready_nodes(1)
        assert run_task(client, "before") == "Succeed"
        before = fuzzing.snapshot(client, ["n1"])
        counted_before = counters(client)
    rss_before = {"session_manager": rss_mb(sm.pid), "executor_manager": rss_mb(node.pid)}
    endpoints = {
        "frontend": daemons.frontend,
        "backend": daemons.backend,
        "instance": fuzzing.instance_socket(daemons, "n1"),
    }
    generators = {door: HostileFrames(door, seed=args.seed + i, max_deep=20_000) for i, door in enumerate(endpoints)}
    plan = [(door, int(args.frames * share)) for door, share in SHARES.items()]
    doors = fuzzing.Doors(endpoints, seed=args.seed)
    start = time.monotonic()
    sent = 0
    try:
        for door, count in plan:
            for _ in range(count):
                doors.send(door, generators[door].next())
                sent += 1
                if sent % 1000 == 0:
                    doors.discard_replies()
                if sent % 100_000 == 0:
                    alive = sm.poll() is None and node.poll() is None
                    rate = sent / (time.monotonic() - start)
                    print(f"  {sent:,} frames sent ({rate:,.0f}/s); daemons alive: {alive}")
                    assert alive, "a daemon died"
    finally:
        doors.close()
    seconds = time.monotonic() - start  # each socket holds at most 10,000 frames not yet read

    with daemons.client() as client:
        fuzzing.register_sender(client)
        sender = HostileFrames("instance", seed=args.seed + 10, max_deep=5_000)
        from_instances = 0
        for round_ in range(0, args.from_instances, 3):  # 3 kills per session and node, then refused
            messages = [sender.next() for _ in range(min(3, args.from_instances - round_))]
            from_instances += fuzzing.send_from_instances(client, f"from-instances-{round_}", messages)
        after = fuzzing.snapshot(client, ["n1"])
        task = run_task(client, "after")
        counted_after = counters(client)
    exits = sum(process.poll() is not None for process in (sm, node))
    result = {
        "frames": sum(doors.sent.values()),
        "by_door": doors.sent,
        "bytes": doors.bytes,
        "seconds": round(seconds, 1),
        "frames_per_second": round(sum(doors.sent.values()) / seconds),
        "sent_by_instances": from_instances,
        "daemon_exits": exits,
        "state_unchanged": after == before,
        "task_after": task,
        "rss_mb_before": {k: round(v, 1) for k, v in rss_before.items()},
        "rss_mb_after": {
            "session_manager": round(rss_mb(sm.pid), 1),
            "executor_manager": round(rss_mb(node.pid), 1),
        },
        "counters_before": counted_before,
        "counters_after": counted_after,
    }
    if after != before:
        result["state_before"], result["state_after"] = before, after
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000, help="hostile messages to send (default 1,000,000)")
    parser.add_argument("--from-instances", type=int, default=30, help="messages real instances send (default 30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "fuzz_soak.json"))
    args = parser.parse_args()
    daemons = Daemons()
    try:
        result = soak(daemons, args)
    except BaseException:
        print(daemons.dump_logs())
        raise
    finally:
        if all(process.poll() is None for process in daemons.procs.values()):
            daemons.stop_all()
        daemons.cleanup()
    result["machine"] = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    print(
        f"fuzz soak: {result['frames']:,} frames ({result['bytes'] / 1e6:,.0f} MB) in {result['seconds']} s, "
        f"{result['frames_per_second']:,}/s, {result['by_door']}; {result['sent_by_instances']} sent by instances"
    )
    print(
        f"daemon exits: {result['daemon_exits']}; state unchanged: {result['state_unchanged']}; "
        f"a task after: {result['task_after']}; RSS MB before {result['rss_mb_before']}, after {result['rss_mb_after']}"
    )
    print(f"counters after: {result['counters_after']}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    ok = result["daemon_exits"] == 0 and result["state_unchanged"] and result["task_after"] == "Succeed"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
