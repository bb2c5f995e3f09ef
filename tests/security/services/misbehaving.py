"""A tenant's service that attacks its executor manager. The first argument says what it does at
start; each task's input says what that task does.

At start (argv[1]):
  behave          nothing special
  deep-at-start   instead of serving, send a frame nested 5,000 levels deep on the instance
                  socket and wait (to be killed)

Task input:
  sleep:<s>              sleep <s> seconds, then answer b"slept"
  deep                   send a frame nested 5,000 levels deep (then wait to be killed)
  garbage:<n>            send <n> frames that do not decode (then wait)
  results:<n>            send <n> TaskResults for tasks it was never given (then wait)
  forge:<executor>:<id>  speak for another executor: results with output b"FORGED" for its task
                         <id>, under its executor id as routing id (then wait)
  frames:<hex>           send the multipart message <hex> (MessagePack list of frames) (then wait)
  other                  echo the input

It speaks on the instance socket with a DEALER of its own, under the routing id the executor
manager gave it (`FLAME_INSTANCE_TOKEN`, or `FLAME_EXECUTOR_ID` for one that gives none), as a
tenant's code can.
"""

from __future__ import annotations

import os
import sys
import time

import msgspec
import zmq

from flamed.service import FlameService, SessionContext, TaskContext, run
from protocol.codec import HEADER

DEEP = b"\x82\xa4type\xa4Ping\xa4junk" + b"\x91" * 5000 + b"\xc0"


def own_id() -> bytes:
    return (os.environ.get("FLAME_INSTANCE_TOKEN") or os.environ["FLAME_EXECUTOR_ID"]).encode()


def send(routing_id: bytes, payloads: list[bytes], raw: list[bytes] | None = None) -> None:
    """Send `[HEADER, payload]` for each payload (or the one message `raw`) under `routing_id`."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect(os.environ["FLAME_INSTANCE_ENDPOINT"])
    for frames in [raw] if raw is not None else [[HEADER, payload] for payload in payloads]:
        sock.send_multipart(frames)
    sock.close()  # lingers until sent


def results(task_id: int, output: bytes) -> bytes:
    outcome = {"task_id": task_id, "attempt": 1, "ok": True, "output": output}
    return msgspec.msgpack.encode({"type": "TaskResults", "results": [outcome]})


class Misbehaving(FlameService):
    def on_session_enter(self, context: SessionContext) -> None:
        pass

    def on_task_invoke(self, context: TaskContext) -> bytes | None:
        text = (context.input or b"").decode()
        verb, _, rest = text.partition(":")
        if verb == "sleep":
            time.sleep(float(rest))
            return b"slept"
        if verb == "deep":
            send(own_id(), [DEEP])
        elif verb == "garbage":
            send(own_id(), [b"\xc1not msgpack"] * int(rest))
        elif verb == "results":
            send(own_id(), [results(1_000_000 + i, b"unasked") for i in range(int(rest))])
        elif verb == "forge":
            executor_id, task_id = rest.rsplit(":", 1)
            send(executor_id.encode(), [results(int(task_id), b"FORGED")] * 20)
        elif verb == "frames":
            send(own_id(), [], raw=msgspec.msgpack.decode(bytes.fromhex(rest)))
        else:
            return context.input
        time.sleep(60)  # the executor manager kills it
        return b"survived"

    def on_session_leave(self) -> None:
        pass


if __name__ == "__main__":
    if sys.argv[1:] == ["deep-at-start"]:
        send(own_id(), [DEEP])
        time.sleep(60)
    run(Misbehaving())
