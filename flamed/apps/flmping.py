"""The `flmping` service (`python -m flamed.apps.flmping`), Flame's default application.

Input is Flame's `PingRequest` as JSON, `{"duration": ms, "memory": "size"}`, both optional:
the task allocates (and touches) `memory`, sleeps `duration` milliseconds, and answers
`PingResponse` `{"message": "Completed on <host> in <ms> milliseconds with <size> memory"}`.
Empty input is the throughput path: the answer is prepared once and returned at once. Input
that is not a JSON object (does not start with `{`) is echoed back unchanged, which makes
`flmping` the echo service scripts and tests reach for.
"""

from __future__ import annotations

import json
import socket
import time

from flamed.service import FlameService, SessionContext, TaskContext, run
from protocol.resources import parse_size

_PAGE = 4096


def _response(host: str, elapsed_ms: int, memory: str) -> bytes:
    message = f"Completed on {host} in {elapsed_ms} milliseconds with {memory} memory"
    return json.dumps({"message": message}).encode()


class PingService(FlameService):
    def __init__(self) -> None:
        self.host = socket.gethostname()
        self.noop = _response(self.host, 0, "0")

    def on_session_enter(self, context: SessionContext) -> None:
        pass

    def on_task_invoke(self, context: TaskContext) -> bytes | None:
        if not context.input:
            return self.noop
        if not context.input.lstrip().startswith(b"{"):
            return context.input
        request = json.loads(context.input)
        if not isinstance(request, dict):
            raise ValueError('input must be a JSON object such as {"duration": 100, "memory": "1Mi"}')
        start = time.monotonic()
        memory = str(request.get("memory") or "0")
        size = parse_size(memory)
        block = bytearray(size)
        for offset in range(0, size, _PAGE):  # touch every page so the memory is really used
            block[offset] = 1
        duration = request.get("duration")
        if duration:
            time.sleep(float(duration) / 1000)
        elapsed = int((time.monotonic() - start) * 1000)
        del block
        return _response(self.host, elapsed, memory)

    def on_session_leave(self) -> None:
        pass


def main() -> None:
    run(PingService())


if __name__ == "__main__":
    main()
