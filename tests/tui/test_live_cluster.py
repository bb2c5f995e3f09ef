"""flame-tui against a real local cluster (session manager + executor manager subprocesses).

Would break if the subscription stopped pushing node changes, if the TUI missed one, or if it
did not follow a node through Ready -> Unknown (executor manager frozen with SIGSTOP) -> Ready
(SIGCONT: it re-registers).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from tests.integration.conftest import cluster, daemons
from tests.integration.daemons import Daemons
from tui.app import FlameTui
from tui.feed import LiveFeed

__all__ = ["cluster", "daemons"]  # the fixtures this module uses

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_nodes_view_follows_a_frozen_and_thawed_executor_manager(cluster: Daemons) -> None:
    daemons = cluster  # a session manager and n1 (2 slots), Ready
    app = FlameTui(LiveFeed(daemons.frontend, interval=0.2))
    seen: list[str] = []

    async def node_state(pilot: object, want: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await pilot.pause(0.1)  # type: ignore[attr-defined]
            table = app.table("nodes")
            if "n1" in table.shown:
                state = table.shown["n1"][1].plain
                if not seen or seen[-1] != state:
                    seen.append(state)
                if state == want:
                    return
        raise AssertionError(f"node n1 never showed {want} (saw {seen})")

    async def main() -> None:
        async with app.run_test(size=(120, 30)) as pilot:
            await node_state(pilot, "Ready", 15)
            em = daemons.procs["n1"].pid
            os.kill(em, signal.SIGSTOP)
            try:
                await node_state(pilot, "Unknown", 4.5)  # 0.5 s x 4 of silence, plus a push
            finally:
                os.kill(em, signal.SIGCONT)
            await node_state(pilot, "Ready", 10)
            assert "DISCONNECTED" not in str(app.query_one("#status").render())

    asyncio.run(main())
    assert seen[-3:] == ["Ready", "Unknown", "Ready"], seen
