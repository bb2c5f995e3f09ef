"""What a heartbeat and a registration cost the session manager's loop, in process.

The session manager's side of a node, without sockets or other processes, so that the figure
is CPU time of this process alone (a shared machine makes the end-to-end bench,
bench/scale_bench.py, noisy): each loop turn decodes a batch of node frames (the backend codec),
hands them to the `Controller` (`handle_nodes`), flushes the turn and encodes what it sends
(`Registered` answers, the session manager's own heartbeats), as the daemon does. Time is
simulated: `--nodes` nodes register, then each heartbeats once per simulated second, for
`--seconds` simulated seconds, in turns of `--batch` frames; between turns the timers run as
the daemon's `_tick` does. Printed: CPU microseconds per registration and per heartbeat (all
of the loop's work counted, scans and heartbeats sent included), and with `--profile` the
functions that cost most.

Usage: python bench/heartbeat_bench.py [--nodes 10000] [--seconds 10] [--batch 200] [--profile]
Writes bench/results/heartbeat.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flamed.config import Config  # noqa: E402 - after the path is set
from flamed.core.controller import Controller  # noqa: E402
from flamed.core.turn import Now  # noqa: E402
from flamed.session_manager.daemon import core_config  # noqa: E402
from protocol import backend as be  # noqa: E402
from protocol.codec import HEADER, PROTOCOL_VERSION, node_message_codec  # noqa: E402
from protocol.types import NodeInfo, ResourceRequirement  # noqa: E402

WALL0 = 1_760_000_000_000


class Loop:
    """The daemon's turn, without sockets: decode, handle, tick when due, flush, encode."""

    def __init__(self, controller: Controller) -> None:
        self.ctl = controller
        self.codec = node_message_codec()
        self.encode = msgspec.msgpack.Encoder().encode
        self.sent: list[tuple[bytes, bytes]] = []

    def turn(self, frames: list[list[bytes]], t: float) -> None:
        now = Now(mono=t, wall=WALL0 + int(t * 1000))
        decode = self.codec.decode
        messages = [(f[0], decode(f[1:])) for f in frames]
        self.ctl.handle_nodes(messages, now)
        if t >= self.ctl.next_deadline():
            self.ctl.tick(now)
        outbox = self.ctl.flush(now)
        self.ctl.checkpoint()
        encode = self.encode
        self.sent = [(peer, encode(message)) for peer, message in outbox.node_messages]


def register_frame(name: str) -> list[bytes]:
    info = NodeInfo(name=name, hostname=name, capacity=ResourceRequirement(cpu=2, memory=2 << 30), max_executors=2)
    message = be.RegisterNode(protocol_version=PROTOCOL_VERSION, node=info, incarnation="bench")
    return [f"{name}/bench".encode(), HEADER, msgspec.msgpack.encode(message)]


def run(nodes: int, seconds: float, batch: int) -> dict[str, Any]:
    controller = Controller(core_config(Config()))
    loop = Loop(controller)
    names = [f"node-{i:05d}" for i in range(nodes)]
    registrations = [register_frame(name) for name in names]
    t = 1.0
    started = time.process_time()
    for first in range(0, nodes, batch):
        loop.turn(registrations[first : first + batch], t)
        t += 0.001
    registered = time.process_time() - started
    epochs = {}
    for name in names:  # what each node's Registered answer told it
        link = controller.link(name)
        assert link is not None and link.peer is not None
        epochs[name] = (link.peer, link.epoch)
    # Heartbeats: every node once a simulated second, spread evenly, `batch` per turn.
    turns_per_second = max(1, nodes // batch)
    step = 1.0 / turns_per_second
    seq = dict.fromkeys(names, 0)
    heartbeats = 0
    started = time.process_time()
    for _ in range(int(seconds)):
        for first in range(0, nodes, batch):
            frames = []
            for name in names[first : first + batch]:
                seq[name] += 1
                peer, epoch = epochs[name]
                frames.append([peer, HEADER, msgspec.msgpack.encode(be.Heartbeat(epoch=epoch, seq=seq[name]))])
            loop.turn(frames, t)
            heartbeats += len(frames)
            t += step
    beating = time.process_time() - started
    stats = controller.stats()
    return {
        "nodes": nodes,
        "batch": batch,
        "simulated_seconds": seconds,
        "us_per_registration": round(registered / nodes * 1e6, 1),
        "us_per_heartbeat": round(beating / heartbeats * 1e6, 1),
        "loop_cpu_percent_at_1s_heartbeats": round(100 * beating / seconds, 1),
        "nodes_ready": int(stats.get("nodes_ready", 0)),
        "false_unknown": int(stats.get("nodes_silent_total", 0)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="simulated seconds of heartbeats")
    parser.add_argument("--batch", type=int, default=200, help="node frames per loop turn")
    parser.add_argument("--profile", action="store_true", help="print the costliest functions")
    args = parser.parse_args()
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    results = run(args.nodes, args.seconds, args.batch)
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return 0  # profiled figures are not the real cost: nothing written
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    for key, value in results.items():
        print(f"{key:36} {value}")
    out = ROOT / "bench" / "results" / "heartbeat.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
