"""What a chaos task carries and what it must return: shared by the test service (which
computes the output) and the checks (which verify it), so "output right" means the same thing
on both sides.

Input: `chaos:<session>:<seq>:<ms>:<fail>`: `seq` is the task's number in the whole workload
(unique across sessions), `ms` how long it works, `fail` 1 if it fails on purpose. Output: `ok:`
and the first 32 hex digits of the input's SHA-256, so a result given to the wrong task, or
made up, does not pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

FAILURE_TEXT = "chaos: failing on purpose"


@dataclass(frozen=True)
class Payload:
    session: int
    seq: int
    ms: int
    fail: bool

    def encode(self) -> bytes:
        return f"chaos:{self.session}:{self.seq}:{self.ms}:{int(self.fail)}".encode()


def decode(data: bytes | None) -> Payload | None:
    """The payload in a task input; None if it is not one of ours."""
    if not data:
        return None
    parts = data.split(b":")
    if len(parts) != 5 or parts[0] != b"chaos":
        return None
    try:
        return Payload(int(parts[1]), int(parts[2]), int(parts[3]), parts[4] == b"1")
    except ValueError:
        return None


def expected_output(data: bytes) -> bytes:
    return b"ok:" + hashlib.sha256(data).hexdigest()[:32].encode()


def failure_message(seq: int) -> str:
    return f"{FAILURE_TEXT} (task {seq})"
