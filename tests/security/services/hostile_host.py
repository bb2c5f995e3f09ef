"""`flamed ARGS` on a host whose name and uname carry terminal escape sequences: the executor
manager reports them in `RegisterNode` exactly as a compromised or badly named worker would.

Run as `python hostile_host.py executor-manager ...`; everything else is the real daemon.
"""

from __future__ import annotations

import platform
import socket
import sys

HOSTNAME = "\x1b]0;owned\x07host\x1b[2J"  # OSC set-title, then CSI clear-screen
SYSTEM = "linux\u202etxt.exe"  # a bidi override
MACHINE = "\x9b31mx86_64\r\nFORGED-ROW"  # C1 CSI, then a forged table row

socket.gethostname = lambda: HOSTNAME
platform.uname = lambda: platform.uname_result(SYSTEM, HOSTNAME, "6.0", "#1", MACHINE)

if __name__ == "__main__":
    from flamed.cli.flamed import main

    sys.exit(main(sys.argv[1:]))
