"""Finding 9, the smaller doors: noise, a held endpoint, numbers that are not numbers.

- An unauthenticated CURVE handshake flood wrote one WARNING per attempt (1,861 lines in 5 s):
  refusals are now logged once per domain per window, with a count, and counted exactly.
- 40 idle connections to the metrics endpoint (cap 32, 5 s idle timeout) starved real scrapes:
  a connection now has a short deadline for its whole request, and at the cap a newcomer
  evicts the oldest connection instead of being refused.
- `delay_release` accepted NaN and inf, `priority` / `min_instances` 2^63-1: every number of a
  spec is now finite and inside a range, refused with InvalidArgument naming both; config
  floats are finite; command-line numbers are bounded.
"""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from flamed.config import ConfigError, parse_config
from flamed.transport.refusal_log import REFUSAL_WINDOW, RefusalLog
from flamed.transport.security import CLIENTS, ZAP_ENDPOINT, AllowList, ZapHandler
from tests.integration.test_security import Keys
from tests.support.daemons import Daemons, free_port
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REFUSAL_LINE = re.compile(r"refused (\S+) connection from")
SUMMARY_LINE = re.compile(r"refused ([\d,]+) more (\S+) connections in the last")


# ---------------------------------------------------------------------------- ZAP refusals


def handshake_flood(endpoint: str, server_public: bytes, seconds: float, batch: int = 50) -> int:
    """New CURVE clients with keys nobody listed, `batch` at a time, for `seconds` (a refused
    client does not retry, so a flood is many clients); how many were made."""
    made = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx = zmq.Context()
        socks = []
        for _ in range(batch):
            public, secret = zmq.curve_keypair()
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_public, public, secret
            sock.connect(endpoint)
            socks.append(sock)
        made += batch
        time.sleep(0.1)  # their handshakes reach the server, which refuses them
        for sock in socks:
            sock.close(0)
        ctx.term()
    return made


def test_a_handshake_flood_is_logged_once_per_window_with_a_count(daemons: Daemons) -> None:
    """Hundreds of refused handshakes in two seconds: one full line and one summary with the
    count for the clients socket, while a refusal on the nodes socket still gets its own line."""
    keys = Keys(daemons)
    daemons.start_session_manager()
    with keys.client("alice") as alice:
        assert wait_for("alice served", lambda: alice.call({"type": "Ping"}).get("type") == "Pong")
    server_public, _ = zmq.auth.load_certificate(keys.dir / "server.key")
    made = handshake_flood(daemons.frontend, server_public, seconds=2.0)
    handshake_flood(daemons.backend, server_public, seconds=0.05)
    wait_for("a refusal on the nodes socket", lambda: "refused nodes connection" in daemons.log("sm"))
    summary = wait_for(
        "the summary of the clients window",
        lambda: SUMMARY_LINE.search(daemons.log("sm")) and SUMMARY_LINE.search(daemons.log("sm")),
        timeout=3 * REFUSAL_WINDOW,
    )
    assert summary.group(2) == "clients"
    refused_more = int(summary.group(1).replace(",", ""))
    assert 50 <= refused_more < made, (summary.group(0), made)
    lines = daemons.log("sm").splitlines()
    full = [line for line in lines if (m := REFUSAL_LINE.search(line)) and m.group(1) == "clients"]
    summaries = [line for line in lines if SUMMARY_LINE.search(line)]
    assert len(full) == 1, "\n".join(full + summaries)  # nodes: at most one more
    assert len(summaries) <= 2, "\n".join(full + summaries)
    with keys.client("alice") as alice:
        assert alice.call({"type": "Ping"})["type"] == "Pong"


def test_zap_refusals_are_counted_exactly_and_logged_per_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Pure timing with a fake clock over the real ZAP socket: 1,000 refusals in one window
    are one line, then one summary of 999 when the window has passed; the counter says 1,000."""
    now = [100.0]
    ctx = zmq.Context()
    allow = tmp_path / "clients"
    allow.mkdir()
    handler = ZapHandler(ctx, {CLIENTS: AllowList(allow)})
    handler.refusals = RefusalLog(logging.getLogger("flamed.security"), clock=lambda: now[0])
    asker = ctx.socket(zmq.REQ)
    asker.connect(ZAP_ENDPOINT)
    key = b"k" * 32
    try:
        with caplog.at_level(logging.WARNING, logger="flamed.security"):
            for _ in range(1000):
                asker.send_multipart([b"1.0", b"1", CLIENTS.encode(), b"10.0.0.9", b"", b"CURVE", key])
                assert handler.sock.poll(5000)
                handler.on_readable()
                assert asker.poll(5000)
                assert asker.recv_multipart()[2] == b"400"
                now[0] += 0.001
            handler.flush_refusals()
            assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == [
                "refused clients connection from 10.0.0.9 (CURVE key yINZ3yIN...: not in the allow-list)"
            ]
            now[0] += REFUSAL_WINDOW
            handler.flush_refusals()
    finally:
        asker.close(0)
        handler.close()
        ctx.term()
    messages = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(messages) == 2
    assert messages[1].startswith("refused 999 more clients connections in the last 6.0 s")
    assert messages[1].endswith("last from 10.0.0.9 (CURVE key yINZ3yIN...: not in the allow-list)")
    assert handler.refused == 1000


# ---------------------------------------------------------------------------- metrics endpoint


class Hoarder:
    """Keeps `idle` connections that say nothing and `trickling` ones that send a byte every
    0.2 s open to the metrics port, reopening each one the server closes."""

    def __init__(self, port: int, idle: int, trickling: int) -> None:
        self.port = port
        self.conns: list[tuple[socket.socket, bool]] = [(self._open(), i < trickling) for i in range(idle + trickling)]
        self.reopened = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open(self) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        conn.setblocking(False)
        return conn

    def _closed(self, conn: socket.socket) -> bool:
        try:
            return conn.recv(1) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            for index, (conn, trickles) in enumerate(self.conns):
                if self._closed(conn):
                    conn.close()
                    self.conns[index] = (self._open(), trickles)
                    self.reopened += 1
                elif trickles:
                    with suppress(OSError):
                        conn.send(b"G")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for conn, _ in self.conns:
            conn.close()


def try_scrape(port: int) -> str:
    """A scrape, or "" while the daemon is not listening yet."""
    try:
        return scrape(port)
    except OSError:
        return ""


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return str(response.read().decode())


def test_idle_and_trickling_connections_do_not_starve_a_scrape(daemons: Daemons) -> None:
    """40 idle and 10 trickling connections, reopened as soon as the server closes them, on an
    endpoint that holds 32: every real scrape is served, and the hoarders keep losing slots."""
    port = free_port()
    daemons.start_session_manager("--metrics", f"127.0.0.1:{port}")
    wait_for("the metrics endpoint", lambda: "flame_heartbeats_total" in try_scrape(port))
    hoarder = Hoarder(port, idle=40, trickling=10)
    try:
        for _ in range(5):
            assert "flame_client_requests_total" in scrape(port)
        wait_for("the server to close hoarded connections", lambda: hoarder.reopened >= 50, timeout=15)
        assert "flame_client_requests_total" in scrape(port)
    finally:
        hoarder.close()
    assert daemons.alive("sm")


# ---------------------------------------------------------------------------- numbers


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (
            {"type": "RegisterApplication", "name": "a", "spec": {"delay_release": NAN}},
            "delay_release must be a finite",
        ),
        (
            {"type": "RegisterApplication", "name": "a", "spec": {"delay_release": INF}},
            "delay_release must be a finite",
        ),
        (
            {"type": "RegisterApplication", "name": "a", "spec": {"delay_release": -INF}},
            "delay_release must be a finite",
        ),
        (
            {"type": "RegisterApplication", "name": "a", "spec": {"max_instances": 2**64 - 1}},
            "max_instances must be in",
        ),
        (
            {"type": "CreateSession", "session_id": "s", "spec": {"application": "flmping", "priority": 2**63 - 1}},
            "priority must be in [0, 2147483647], got 9223372036854775807",
        ),
        (
            {
                "type": "CreateSession",
                "session_id": "s",
                "spec": {"application": "flmping", "min_instances": 2**63 - 1},
            },
            "min_instances must be in [0, 1000000]",
        ),
        (
            {"type": "CreateSession", "session_id": "s", "spec": {"application": "flmping", "max_instances": 0}},
            "max_instances must be in [1, 1000000]",
        ),
        (
            {"type": "CreateSession", "session_id": "s", "spec": {"application": "flmping", "batch_size": 2**63 - 1}},
            "batch_size must be in",
        ),
        (
            {"type": "CreateSession", "session_id": "s", "spec": {"application": "flmping", "priority": -(2**63)}},
            "priority must be in",
        ),
        (
            {
                "type": "CreateSession",
                "session_id": "s",
                "spec": {"application": "flmping", "resreq": {"cpu": 1, "memory": 2**64 - 1, "gpu": 0}},
            },
            "resreq.memory must be in [0, 1125899906842624]",
        ),
        (
            {
                "type": "CreateSession",
                "session_id": "s",
                "spec": {"application": "flmping", "resreq": {"cpu": 2**40, "memory": 1, "gpu": 0}},
            },
            "resreq.cpu must be in [0, 65536]",
        ),
        (
            {"type": "OpenSession", "session_id": "s", "spec": {"application": "flmping", "priority": 2**40}},
            "priority must be in",
        ),
    ],
)
def test_numbers_that_are_not_sane_are_refused_naming_the_field(
    daemons: Daemons, message: dict[str, Any], words: str
) -> None:
    """Would break if NaN slipped through `< 0` or a huge integer reached the scheduler."""
    daemons.start_session_manager()
    with daemons.client() as client:
        reply = client.call(message)
        assert reply["type"] == "Error", reply
        assert reply["code"] == "InvalidArgument", reply
        assert words in reply["message"], reply
        assert client.call({"type": "ListSessions"})["sessions"] == []
        assert "a" not in [a["name"] for a in client.call({"type": "ListApplications"})["applications"]]
    assert daemons.alive("sm")


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ({"recovery": {"heartbeat_interval": NAN}}, "key recovery.heartbeat_interval: must be a finite number"),
        ({"recovery": {"drain_timeout": INF}}, "key recovery.drain_timeout: must be a finite number"),
        ({"cluster": {"rebalance_after": NAN}}, "key cluster.rebalance_after: must be a finite number"),
        ({"executor_manager": {"stop_grace": INF}}, "key executor_manager.stop_grace"),
        ({"client": {"timeout": 1e12}}, "key client.timeout: must be a finite number of seconds <= 604800"),
        ({"limits": {"max_sessions": 2**63 - 1}}, "key limits.max_sessions: must be <="),
    ],
)
def test_config_numbers_must_be_finite_and_bounded(toml: dict[str, Any], words: str) -> None:
    """TOML has `nan` and `inf`; NaN passes `<= 0`, so every float key is checked finite."""
    with pytest.raises(ConfigError, match=re.escape(words)):
        parse_config(toml)


def test_a_session_manager_refuses_a_nan_in_its_config(daemons: Daemons) -> None:
    """Breaks if a session manager starts with NaN as a duration in its config instead of exiting 2 naming the
    key."""
    daemons.config.write_text("[recovery]\nheartbeat_interval = nan\n")
    proc = daemons.start_session_manager()
    assert proc.wait(30) == 2
    assert "key recovery.heartbeat_interval: must be a finite number" in daemons.log("sm")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["flamed.cli.flmctl", "create", "-a", "x", "-p", "99999999999999999999"], "is not in [0, 2147483647]"),
        (["flamed.cli.flmctl", "view", "-s", "s", "-t", "-1"], "is not in [1, 9223372036854775807]"),
        (["flamed.cli.flmping", "-t", "-1"], "is not in [0, 10000000]"),
        (["flamed.cli.flmping", "-P", "-5"], "is not in [0, 2147483647]"),
        (["flamed.cli.flmping", "-d", "100000000000"], "is not in [0, 86400000]"),
        (["tui.app", "--interval", "nan"], "--interval: nan is not a number of seconds"),
        (["flamed", "status", "--timeout", "inf"], "must be a number of seconds in (0, 3600]"),
    ],
)
def test_command_line_numbers_are_bounded(argv: list[str], words: str) -> None:
    """Out-of-range numbers are usage errors (exit 2, one line), not a traceback after connecting."""
    result = subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 2, result.stderr
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
