"""The session manager's backend ROUTER finds dead executor-manager connections with TCP
keepalive, not ZMTP PINGs; its frontend keeps ZMTP heartbeats.

Why: libzmq cancels the timeout timer of every PING answered by walking all the timers of its
I/O thread (one or two per connection), so PINGs on a ROUTER of N peers cost N squared. At
5,000 simulated nodes that walk was 64% of the session manager's I/O thread, and at 10,000 the
session manager fell so far behind that nodes could not register (bench/scale_bench.py).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from flamed.config import Config
from flamed.session_manager import SessionManager, SessionManagerOptions
from flamed.transport.sockets import ZMTP_INTERVAL, ZMTP_TIMEOUT

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def manager() -> Iterator[SessionManager]:
    workdir = Path(tempfile.mkdtemp(prefix="flbs-", dir="/tmp"))  # ipc paths must be short
    options = SessionManagerOptions(config=Config(), frontend=f"ipc://{workdir}/fe", backend=f"ipc://{workdir}/be")
    made = SessionManager(options)
    try:
        yield made
    finally:
        made.close()
        shutil.rmtree(workdir, ignore_errors=True)


def test_backend_sends_no_zmtp_pings_and_clears_dead_peers_with_tcp_keepalive(manager: SessionManager) -> None:
    """Breaks if the backend pings its executor managers again (a cost of nodes squared in
    libzmq's I/O thread), or if nothing clears a dead TCP peer's connection any more (keepalive
    probes when idle, the user timeout when its data goes unacknowledged)."""
    backend = manager.backend

    def option(name: int) -> int:
        return int(backend.getsockopt(name))

    assert option(zmq.HEARTBEAT_IVL) == 0
    assert option(zmq.HEARTBEAT_TTL) == 0  # nor asks them to drop their side
    assert option(zmq.TCP_KEEPALIVE) == 1
    idle, interval, probes = (
        option(o) for o in (zmq.TCP_KEEPALIVE_IDLE, zmq.TCP_KEEPALIVE_INTVL, zmq.TCP_KEEPALIVE_CNT)
    )
    assert 0 < idle + interval * probes <= ZMTP_TIMEOUT  # a dead idle peer is found as soon as ZMTP found it
    assert option(zmq.TCP_MAXRT) == round(ZMTP_TIMEOUT * 1000)


def test_frontend_keeps_zmtp_heartbeats(manager: SessionManager) -> None:
    """Breaks if clients' dead connections are no longer cleared by ZMTP heartbeats (a client
    that reconnects after a pause relies on them, with handover)."""
    frontend = manager.frontend
    assert int(frontend.getsockopt(zmq.HEARTBEAT_IVL)) == round(ZMTP_INTERVAL * 1000)
    assert int(frontend.getsockopt(zmq.HEARTBEAT_TIMEOUT)) == round(ZMTP_TIMEOUT * 1000)
