"""A second "host" on this machine: a network namespace joined to ours by a veth pair, whose
link a test can cut and heal (both ends set down, then up: packets in flight are lost, the
TCP connections stay open and the processes on both sides keep running, as when a cable or a
switch port fails). Needs root and iproute2; `Link.create` skips the test with the reason
when either is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _ip(*args: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run([*prefix, "ip", *args], capture_output=True, text=True, check=False, timeout=10)


class Link:
    """Namespace `name` with address `inside`, reached from here at `outside`."""

    def __init__(self, tag: int) -> None:
        self.name = f"flt{tag}"
        self.host_if = f"flt{tag}h"  # interface names: at most 15 bytes
        self.peer_if = f"flt{tag}n"
        subnet = 4 * (tag % 60)
        self.outside = f"10.213.{tag % 250}.{subnet + 1}"
        self.inside = f"10.213.{tag % 250}.{subnet + 2}"
        self._made: list[str] = []

    @classmethod
    def create(cls) -> Link:
        if os.geteuid() != 0:
            pytest.skip("a network partition needs root (to create a network namespace and a veth pair)")
        if shutil.which("ip") is None:
            pytest.skip("a network partition needs iproute2's `ip` command")
        link = cls(os.getpid() % 10_000)
        try:
            link._setup()
        except RuntimeError as exc:
            link.remove()
            pytest.skip(f"cannot build a network namespace here: {exc}")
        return link

    def _run(self, *args: str, netns: str | None = None) -> None:
        done = _ip(*args, netns=netns)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def _setup(self) -> None:
        self.remove()  # leftovers of an interrupted run with the same tag
        self._run("netns", "add", self.name)
        self._made.append("netns")
        self._run("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
        self._made.append("link")
        self._run("link", "set", self.peer_if, "netns", self.name)
        self._run("addr", "add", f"{self.outside}/30", "dev", self.host_if)
        self._run("addr", "add", f"{self.inside}/30", "dev", self.peer_if, netns=self.name)
        self._run("link", "set", "lo", "up", netns=self.name)
        self.heal()

    def cut(self) -> None:
        self._run("link", "set", self.host_if, "down")
        self._run("link", "set", self.peer_if, "down", netns=self.name)

    def heal(self) -> None:
        self._run("link", "set", self.host_if, "up")
        self._run("link", "set", self.peer_if, "up", netns=self.name)

    def remove(self) -> None:
        _ip("link", "del", self.host_if)  # deletes both ends
        _ip("netns", "del", self.name)
