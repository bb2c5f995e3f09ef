"""systemd's notify protocol (sd_notify(3)) without libsystemd: readiness, status, watchdog.

Under `Type=notify` systemd passes `$NOTIFY_SOCKET`, a unix datagram socket (a leading `@`
means the Linux abstract namespace). A message is one datagram of newline-separated
`KEY=value` lines: `READY=1`, `STATUS=...`, `STOPPING=1`, `RELOADING=1`, `WATCHDOG=1`. The
systemd developers call this protocol stable and recommend re-implementing it. Outside
systemd every call is a no-op, and a send that fails is logged once, never raised: the
daemon must not die because its supervisor went away.

The watchdog ping is scheduled on the daemon's own loop (`watchdog_interval()` is half of
`$WATCHDOG_USEC`), so a wedged loop stops pinging and systemd restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("flamed.notify")


class Notifier:
    """Sends sd_notify messages to `$NOTIFY_SOCKET` (read once, at construction)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._watchdog_usec = _watchdog_usec(env)
        if environ is None:
            # Like sd_notify's unset_environment: the instances we start must not inherit these.
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(name, None)
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def watchdog_interval(self) -> float | None:
        """Seconds between `WATCHDOG=1` pings (half of WatchdogSec), or None when off."""
        if not self._watchdog_usec:
            return None
        return self._watchdog_usec / 2_000_000

    def send(self, **fields: str | int) -> bool:
        """Send one message, e.g. `send(READY=1, STATUS="serving")`; False if not delivered."""
        if not self.address:
            return False
        text = "\n".join(f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(text.encode(), self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("sd_notify to %r failed: %s (further failures are not logged)", self.address, exc)
                self._failed = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def stopping(self, status: str) -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def alive(self, status: str) -> None:
        """The periodic ping: `WATCHDOG=1` with the status when systemd watches us, else the
        status alone. Call it from the daemon's loop, so a wedged loop stops pinging."""
        if self.watchdog_interval() is not None:
            self.send(WATCHDOG=1, STATUS=status)
        else:
            self.status(status)

    def alive_every(self) -> float:
        """How often to call `alive`: the watchdog interval, or every 5 s for the status."""
        return self.watchdog_interval() or 5.0

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_usec(env: os._Environ[str] | dict[str, str]) -> int:
    """`$WATCHDOG_USEC`, when it is meant for this process (`$WATCHDOG_PID` unset or ours)."""
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return 0
    try:
        value = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return 0
    return max(0, value)
