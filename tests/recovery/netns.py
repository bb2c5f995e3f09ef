"""A second "host" on this machine: a network namespace joined to ours by a veth pair, whose
link a test can cut and heal (both ends set down, then up: packets in flight are lost, the
TCP connections stay open and the processes on both sides keep running, as when a cable or a
switch port fails). Needs root and iproute2.

`Link.create()` makes one for a pytest test and skips the test with the reason when root or
`ip` is missing. `Link.build(tag, prefix)` is the same without pytest (the chaos runner makes
one per node): it raises `NetnsUnavailable` with the reason. Links of one prefix are named
`<prefix><tag>` (namespace), `<prefix><tag>h` (host end) and `<prefix><tag>n` (the end inside);
each tag gets its own /30, so several links live side by side.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


class NetnsUnavailable(RuntimeError):
    """No network namespace can be made here; the message says why."""


def _ip(*args: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run([*prefix, "ip", *args], capture_output=True, text=True, check=False, timeout=10)


def unavailable() -> str | None:
    """Why no network namespace can be made here, or None if one can be tried."""
    if os.geteuid() != 0:
        return "needs root (to create a network namespace and a veth pair)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` command"
    return None


def namespace_exists(name: str) -> bool:
    done = _ip("netns", "list")
    return any(line.split()[0] == name for line in done.stdout.splitlines() if line.strip())


class Link:
    """Namespace `name` with address `inside`, reached from here at `outside`."""

    def __init__(self, tag: int, prefix: str = "flt", network: int = 213) -> None:
        self.name = f"{prefix}{tag}"
        self.host_if = f"{prefix}{tag}h"  # interface names: at most 15 bytes
        self.peer_if = f"{prefix}{tag}n"
        if len(self.host_if) > 15:
            raise ValueError(f"interface name {self.host_if!r} is over 15 bytes; use a shorter prefix or tag")
        subnet = 4 * (tag % 60)
        self.outside = f"10.{network}.{tag % 250}.{subnet + 1}"
        self.inside = f"10.{network}.{tag % 250}.{subnet + 2}"

    @classmethod
    def create(cls) -> Link:
        """One link for a pytest test; skips the test if none can be made."""
        reason = unavailable()
        if reason is not None:
            pytest.skip(f"a network partition {reason}")
        try:
            return cls.build(os.getpid() % 10_000)
        except NetnsUnavailable as exc:
            pytest.skip(str(exc))

    @classmethod
    def build(cls, tag: int, prefix: str = "flt", network: int = 213) -> Link:
        """Make the namespace and its veth pair, link up; raises NetnsUnavailable."""
        reason = unavailable()
        if reason is not None:
            raise NetnsUnavailable(f"a network namespace {reason}")
        link = cls(tag, prefix, network)
        try:
            link._setup()
        except RuntimeError as exc:
            link.remove()
            raise NetnsUnavailable(f"cannot build a network namespace here: {exc}") from None
        return link

    def _run(self, *args: str, netns: str | None = None) -> None:
        done = _ip(*args, netns=netns)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def _setup(self) -> None:
        self.remove()  # leftovers of an interrupted run with the same tag
        self._run("netns", "add", self.name)
        self._run("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
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
