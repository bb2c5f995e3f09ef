"""Where the executor managers of a chaos run live.

Namespaced (root and iproute2 available): each node gets its own network namespace joined to
this one by a veth pair (`tests/recovery/netns.Link`); the session manager's backend listens on
every interface and each executor manager reaches it through its own link, so cutting one link
partitions exactly one node. Loopback (otherwise): every executor manager talks to 127.0.0.1,
and a partition is simulated by freezing the executor manager (SIGSTOP/SIGCONT); `reason`
says why, and the runner prints it.
"""

from __future__ import annotations

import os

from tests.recovery.netns import Link, NetnsUnavailable, namespace_exists, unavailable
from tests.support.daemons import free_port

#: namespace and interface names `flc<tag>`; addresses 10.214.x.y/30 (the recovery tests use 213)
PREFIX = "flc"
NETWORK = 214
#: an executor manager's metrics port inside its own namespace (each namespace has its own ports)
METRICS_PORT = 9464


class Hosts:
    def __init__(self, nodes: list[str], links: dict[str, Link], reason: str) -> None:
        self.nodes = nodes
        self.links = links
        #: why the run is on loopback ("" when namespaced)
        self.reason = reason
        self._metrics = {n: f"127.0.0.1:{free_port()}" for n in nodes} if not links else {}

    @property
    def namespaced(self) -> bool:
        return bool(self.links)

    @property
    def describe(self) -> str:
        if self.namespaced:
            return f"{len(self.nodes)} nodes, each in its own network namespace (veth to the host)"
        return f"{len(self.nodes)} nodes on loopback; partitions simulated with SIGSTOP ({self.reason})"

    def backend_bind(self, port: int) -> str:
        return f"tcp://0.0.0.0:{port}" if self.namespaced else f"tcp://127.0.0.1:{port}"

    def free_backend_port(self) -> int:
        return free_port("0.0.0.0" if self.namespaced else "127.0.0.1")

    def backend_for(self, node: str, port: int) -> str:
        """The backend endpoint as `node` reaches it."""
        if self.namespaced:
            return f"tcp://{self.links[node].outside}:{port}"
        return f"tcp://127.0.0.1:{port}"

    def metrics_for(self, node: str) -> str:
        """HOST:PORT of the node's executor-manager metrics, as both it and we reach it."""
        if self.namespaced:
            return f"{self.links[node].inside}:{METRICS_PORT}"
        return self._metrics[node]

    def prefix(self, node: str) -> tuple[str, ...]:
        """What to run the node's executor manager through (it execs, so the pid stays)."""
        return ("ip", "netns", "exec", self.links[node].name) if self.namespaced else ()

    def cut(self, node: str) -> None:
        self.links[node].cut()

    def heal(self, node: str) -> None:
        self.links[node].heal()

    def close(self) -> None:
        for link in self.links.values():
            link.remove()
        self.links = {}


def make_hosts(nodes: list[str], want_netns: bool = True) -> Hosts:
    """Namespaced hosts if wanted and possible, else loopback (with the reason)."""
    if not want_netns:
        return Hosts(nodes, {}, "network namespaces turned off (--no-netns)")
    reason = unavailable()
    if reason is not None:
        return Hosts(nodes, {}, f"a network namespace {reason}")
    links: dict[str, Link] = {}
    tag = 1000 + (os.getpid() % 3000) * 3  # names flc1000..flc9999: unique per runner, mostly
    try:
        for node in nodes:
            while namespace_exists(f"{PREFIX}{tag}"):  # another run's: never touch it
                tag += 1
            links[node] = Link.build(tag, PREFIX, NETWORK)
            tag += 1
    except NetnsUnavailable as exc:
        for link in links.values():
            link.remove()
        return Hosts(nodes, {}, str(exc))
    return Hosts(nodes, links, "")
