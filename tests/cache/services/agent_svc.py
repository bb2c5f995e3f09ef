"""An agent service for the tests: echoes a request, keeps a list of what it saw in the session's
context, and answers `("context",)` with the context it reads."""

from __future__ import annotations

import asyncio

from flamed.service import FlameInstance

instance = FlameInstance()


@instance.entrypoint
async def handle(request: tuple[str, ...]) -> object:
    await asyncio.sleep(0)
    seen = instance.context()
    if request[0] == "context":
        return seen
    if request[0] == "fail":
        raise ValueError(f"refused {request[1]}")
    instance.update_context([*(seen or []), request[1]])
    return ("echo", request[1])


if __name__ == "__main__":
    instance.run()
