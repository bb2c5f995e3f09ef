"""The units pass `systemd-analyze verify`, and each daemon speaks sd_notify: READY=1 after
the log replay and the binds, WATCHDOG=1 from its loop, and no WATCHDOG once the loop stops."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flamed.notify import Notifier
from tests.support.daemons import Daemons
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

UNITS = Path(__file__).resolve().parents[2] / "systemd"


@pytest.mark.integration
@pytest.mark.parametrize(
    "unit", ["flame-session-manager.service", "flame-executor-manager.service", "flame-object-cache.service"]
)
def test_unit_passes_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    """Would break on a misspelt directive or a bad value. verify insists that ExecStart's
    binary exists, so the copy points at this venv's `flamed`."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    flamed = Path(sys.executable).with_name("flamed")
    assert flamed.exists(), flamed
    text = (UNITS / unit).read_text()
    assert "/usr/local/bin/flamed " in text
    (tmp_path / unit).write_text(text.replace("/usr/local/bin/flamed ", f"{flamed} "))
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert not result.stderr.strip(), result.stderr
    for directive in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "NoNewPrivileges=yes", "User=flame"):
        assert directive in text


def test_notifier_is_a_no_op_without_notify_socket() -> None:
    """Breaks if a daemon not started by systemd (no NOTIFY_SOCKET) tries to notify or asks for a watchdog."""
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.watchdog_interval() is None


def test_notifier_reaches_an_abstract_socket() -> None:
    """'@name' means the abstract namespace: the first byte becomes NUL."""
    name = f"flame-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000000"})
        assert notifier.ready("up")
        assert server.recv(1024) == b"READY=1\nSTATUS=up"
        assert notifier.watchdog_interval() == 1.0
        notifier.close()


def test_watchdog_usec_for_another_pid_is_ignored() -> None:
    """Breaks if a daemon pings a watchdog that systemd set up for another process (WATCHDOG_PID)."""
    notifier = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert notifier.watchdog_interval() is None


class FakeSystemd:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def pump(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return self.messages

    def count(self, line: str) -> int:
        return sum(line in m.split("\n") for m in self.pump())

    def close(self) -> None:
        self.sock.close()


def _under_fake_systemd(daemons: Daemons, name: str) -> FakeSystemd:
    fake = FakeSystemd(daemons.dir / f"notify-{name}")
    daemons.env.update(NOTIFY_SOCKET=str(fake.path), WATCHDOG_USEC="400000")
    return fake


def _watchdog_keeps_coming_and_stops_when_the_loop_does(daemons: Daemons, name: str, fake: FakeSystemd) -> None:
    wait_for("READY=1", lambda: fake.count("READY=1"), timeout=30)
    before = fake.count("WATCHDOG=1")
    wait_for("more WATCHDOG=1 pings", lambda: fake.count("WATCHDOG=1") >= before + 4, timeout=10)
    pid = daemons.procs[name].pid
    os.kill(pid, signal.SIGSTOP)  # a wedged loop: no more pings
    try:
        fake.pump()
        frozen = fake.count("WATCHDOG=1")
        time.sleep(2.0)  # five ping intervals of silence
        assert fake.count("WATCHDOG=1") == frozen, "pings while the process is stopped"
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for("pings again after SIGCONT", lambda: fake.count("WATCHDOG=1") > frozen, timeout=10)


@pytest.mark.integration
def test_session_manager_is_ready_after_replay_and_pings_the_watchdog(daemons: Daemons) -> None:
    """READY=1 must follow the replay (STATUS=replaying ...) and come once; a stopped loop
    must stop the pings, or systemd could not catch a hung daemon."""
    fake = _under_fake_systemd(daemons, "sm")
    try:
        daemons.start_session_manager()
        wait_for("READY=1", lambda: fake.count("READY=1"), timeout=30)
        messages = fake.pump()
        replay = next(i for i, m in enumerate(messages) if "STATUS=replaying the log" in m)
        ready = next(i for i, m in enumerate(messages) if "READY=1" in m.split("\n"))
        assert replay < ready, messages
        with daemons.client() as client:  # ready means served
            assert client.call({"type": "Ping"})["type"] == "Pong"
        _watchdog_keeps_coming_and_stops_when_the_loop_does(daemons, "sm", fake)
        assert daemons.stop("sm") == 0
        assert fake.count("STOPPING=1") == 1
    finally:
        fake.close()


@pytest.mark.integration
def test_executor_manager_is_ready_and_pings_the_watchdog(daemons: Daemons) -> None:
    """Breaks if the executor manager under systemd does not say READY once registered, stops pinging the
    watchdog while running, or never says it is connected."""
    daemons.start_session_manager()
    fake = _under_fake_systemd(daemons, "n1")
    try:
        daemons.start_executor_manager("n1", 1)
        daemons.wait_ready_nodes(1)
        _watchdog_keeps_coming_and_stops_when_the_loop_does(daemons, "n1", fake)
        wait_for("a connected STATUS", lambda: any("STATUS=connected" in m for m in fake.pump()), timeout=10)
    finally:
        fake.close()


@pytest.mark.integration
def test_object_cache_is_ready_after_its_scan_and_pings_the_watchdog(daemons: Daemons) -> None:
    """READY=1 after the state directory is scanned (STATUS=scanning ...) and the socket is
    bound; pings from the loop; STOPPING=1 on SIGTERM."""
    fake = _under_fake_systemd(daemons, "cache")
    try:
        daemons.start_object_cache()
        wait_for("READY=1", lambda: fake.count("READY=1"), timeout=30)
        messages = fake.pump()
        scan = next(i for i, m in enumerate(messages) if "STATUS=scanning" in m)
        ready = next(i for i, m in enumerate(messages) if "READY=1" in m.split("\n"))
        assert scan < ready, messages
        _watchdog_keeps_coming_and_stops_when_the_loop_does(daemons, "cache", fake)
        assert daemons.stop("cache") == 0
        assert fake.count("STOPPING=1") == 1
    finally:
        fake.close()
