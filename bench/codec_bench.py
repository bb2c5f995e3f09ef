"""What the nesting-depth check (protocol/nesting.py) adds to decoding, message by message.

Each message of the task hot path (and a few larger ones) is decoded many times through the
codec (`Codec.decode_payload`: depth check, then msgspec) and straight through the msgspec
decoder the codec wraps (what decoding cost before the check), in the same process, and the
extra time is reported per message, with which step of the check decided it. The last rows are
what only a hostile or newer peer sends (a field we do not know): those are walked.

    python bench/codec_bench.py          # prints a table, writes bench/results/codec.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protocol import backend as be  # noqa: E402 - after the path is set
from protocol import codec, nesting  # noqa: E402
from protocol import frontend as fe  # noqa: E402
from protocol import instance as im  # noqa: E402
from protocol.types import Task, TaskState  # noqa: E402

rng = random.Random(7)


def text(n: int) -> bytes:
    return json.dumps({"duration": rng.randint(0, 9), "pad": "x" * max(0, n - 30)}).encode()[:n]


def blob(n: int) -> bytes:
    return rng.randbytes(n)


def completed(i: int, output: bytes) -> be.TaskCompleted:
    state = TaskState.Succeed
    return be.TaskCompleted(executor_id="3f9a0c1d", session_id="s", task_id=i, attempt=1, state=state, output=output)


def outcomes(count: int, output: Callable[[], bytes]) -> im.TaskResults:
    results = [im.TaskOutcome(task_id=i, attempt=1, ok=True, output=output()) for i in range(count)]
    return im.TaskResults(results=results)


def reports(count: int) -> be.Reports:
    return be.Reports(epoch=3, seq=8, reports=[completed(i, text(40)) for i in range(count)])


def cases() -> list[tuple[str, Any, Any]]:
    """(name, codec, message) for the messages each hop decodes most."""
    assignments = [be.TaskAssignment(task_id=i, attempt=1, input=text(20)) for i in range(32)]
    launch = be.LaunchTasks(executor_id="3f9a0c1d", session_id="s", tasks=assignments)
    tasks = [Task(id=i, session_id="s", state=TaskState.Succeed, output=text(40)) for i in range(200)]
    inputs: list[bytes | None] = [text(20) for _ in range(1000)]
    requests, replies = codec.client_request_codec(), codec.server_reply_codec()
    nodes, managers = codec.node_message_codec(), codec.manager_message_codec()
    instances, commands = codec.instance_message_codec(), codec.instance_command_codec()
    return [
        ("Ping (frontend)", requests, fe.Ping(request_id=7)),
        ("Heartbeat (backend)", nodes, be.Heartbeat(epoch=3, seq=99)),
        ("CreateTasks 1,000 text inputs", requests, fe.CreateTasks(session_id="s", inputs=inputs, request_id=9)),
        ("LaunchTasks 32 (EM backend)", managers, be.Commands(epoch=3, seq=5, ack=4, commands=[launch])),
        ("InvokeTasks 32 (instance)", commands, im.InvokeTasks(tasks=assignments)),
        ("TaskResults 64 text (EM)", instances, outcomes(64, lambda: text(40))),
        ("TaskResults 64 x 1 KB binary (EM)", instances, outcomes(64, lambda: blob(1024))),
        ("Reports 64 (SM backend)", nodes, reports(64)),
        ("Reports 500 (SM backend)", nodes, reports(500)),
        ("TaskUpdates 200 (SDK)", replies, fe.TaskUpdates(request_id=4, tasks=tasks)),
        ("TaskResults 1 x 1 MB binary (EM)", instances, outcomes(1, lambda: blob(1 << 20))),
        ("Reports 500, unknown field (walked)", nodes, Unknown(reports(500))),
        ("TaskResults 64 x 1 KB, unknown field (walked)", instances, Unknown(outcomes(64, lambda: blob(1024)))),
    ]


class Unknown:
    """A message with one field its receiver does not know, as a newer peer would send."""

    def __init__(self, message: Any) -> None:
        fields = msgspec.msgpack.decode(codec.encode_payload(message))
        self.payload = msgspec.msgpack.encode({**fields, "added_later": [1, 2]})


def decided_by(dec: Any, payload: bytes) -> str:
    """Which step of the codec's depth check settles this payload (codec.py, nesting.py)."""
    if len(payload) <= nesting.MAX_DEPTH:
        return "size"
    if nesting.bounded(payload):
        return "header count"
    if dec._shapes.fits(payload):
        return "strict shape"
    return "walk"


def per_call(fn: Callable[[], object], seconds: float) -> float:
    """Best of 5 rounds of the mean time of one call, in microseconds."""
    fn()
    calls = 1
    start = time.perf_counter()
    while time.perf_counter() - start < seconds / 10:
        fn()
        calls += 1
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement (default 1)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "codec.json"))
    args = parser.parse_args()
    rows = []
    print(f"{'message':46} {'bytes':>9} {'msgspec us':>11} {'codec us':>9} {'extra':>7}  decided by")
    for name, dec, message in cases():
        payload = message.payload if isinstance(message, Unknown) else codec.encode_payload(message)
        plain = per_call(functools.partial(dec._decoder.decode, payload), args.seconds)
        checked = per_call(functools.partial(dec.decode_payload, payload), args.seconds)
        row = {
            "message": name,
            "bytes": len(payload),
            "msgspec_us": round(plain, 2),
            "codec_us": round(checked, 2),
            "extra_pct": round(100 * (checked - plain) / plain, 1),
            "decided_by": decided_by(dec, payload),
        }
        rows.append(row)
        print(
            f"{name:46} {len(payload):>9} {plain:>11.2f} {checked:>9.2f} {row['extra_pct']:>6.1f}%  {row['decided_by']}"
        )
    result = {
        "max_depth": nesting.MAX_DEPTH,
        "rows": rows,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
