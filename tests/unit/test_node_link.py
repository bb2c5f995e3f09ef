"""NodeLink: what a checkpoint keeps of a link."""

from __future__ import annotations

import itertools
from typing import Any

from flamed.core.links import SCANS_PER_INTERVAL
from flamed.core.node_link import DrainOrder, LinkOrder, NodeLink
from protocol import backend as be
from protocol.types import NodeState
from tests.unit.core_harness import Harness


def test_a_link_copy_has_every_slot_and_shares_no_command_list() -> None:
    """Breaks if a slot is added to NodeLink but not to `copy`: a rolled-back turn would put
    back links without it (an AttributeError at the next message of that node), or if the copy
    shared the live link's command list."""
    link = NodeLink("n1", b"peer", "inc-1", 7, 12.5)
    for index, slot in enumerate(NodeLink.__slots__):
        if slot not in ("commands", "connection"):
            setattr(link, slot, getattr(link, slot) if slot in ("name", "peer", "incarnation") else index)
    link.commands.append(be.ReleaseExecutor(executor_id="e1"))
    twin = link.copy()
    assert {slot: getattr(twin, slot) for slot in NodeLink.__slots__} == {
        slot: getattr(link, slot) for slot in NodeLink.__slots__
    }
    assert twin.commands is not link.commands


RESTORED_FIELDS = ("name", "peer", "incarnation", "epoch", "connection", "recv_seq", "ack", "drain_deadline", "key")


def _fields(link: object) -> tuple[object, ...]:
    return tuple(getattr(link, name) for name in RESTORED_FIELDS)


def test_a_checkpoint_keeps_only_the_links_a_turn_touches_and_restores_the_table() -> None:
    """Breaks if a checkpoint goes back to copying every link (38% of an idle session
    manager's CPU with 1,000 nodes heartbeating), or copies a link for a mere heartbeat (one
    copy per heartbeat at 10,000 nodes), or if a link changed, closed or made after the
    checkpoint is not put back as it was (a rolled-back turn would leave a node's link ahead
    of the disk)."""
    h = Harness()
    n1, n2, n3 = h.add_node("n1"), h.add_node("n2"), h.add_node("n3")
    before = {name: _fields(h.ctl.link(name)) for name in ("n1", "n2", "n3")}
    untouched = h.ctl.link("n3")
    checkpoint = h.ctl.checkpoint()
    assert checkpoint.links.undo == {}  # taking it copied nothing

    n3.seq += 1
    h.ctl.handle_node(n3.peer, be.Heartbeat(epoch=n3.epoch, seq=n3.seq), h.now())
    assert checkpoint.links.undo == {}  # a heartbeat changes nothing durable: nothing to undo
    n1.seq += 1
    h.ctl.handle_node(n1.peer, be.Reports(epoch=n1.epoch, seq=n1.seq, reports=[]), h.now())
    n1.seq += 1
    h.ctl.handle_node(n1.peer, be.Heartbeat(epoch=n1.epoch, seq=n1.seq), h.now())
    n2.seq += 1
    h.ctl.handle_node(n2.peer, be.Goodbye(epoch=n2.epoch, seq=n2.seq), h.now())
    n4 = h.add_node("n4")
    assert h.ctl.link("n2") is None
    assert _fields(h.ctl.link("n1")) != before["n1"]
    assert set(checkpoint.links.undo) == {"n1", "n2", "n4"}  # n3 was not copied

    h.ctl.links.restore(checkpoint.links)
    assert {name: _fields(h.ctl.link(name)) for name in ("n1", "n2")} == {n: before[n] for n in ("n1", "n2")}
    assert h.ctl.link("n4") is None
    assert h.ctl.link("n3") is untouched
    assert untouched is not None
    assert untouched.recv_seq == n3.seq  # its heartbeat stays taken
    assert h.ctl.links.registered_as(n2.peer) is not None  # its connection is known again
    assert h.ctl.links.registered_as(n4.peer) is None
    assert n3.epoch == before["n3"][3]


def test_heartbeats_and_silence_are_found_by_scans_within_a_scan_period() -> None:
    """Links are scanned ten times a heartbeat interval instead of on every turn: breaks if a
    node waits longer than an interval plus a scan period for a heartbeat, or a silent node is
    judged later than the liveness limit plus a scan period (or sooner than the limit)."""
    h = Harness(heartbeat_interval=1.0, heartbeat_liveness=3)
    period = 1.0 / SCANS_PER_INTERVAL
    nodes = [h.add_node(f"n{i}") for i in range(3)]
    heard: dict[str, list[float]] = {node.name: [] for node in nodes}
    for node in nodes:
        receive = node.receive

        def recording(message: be.Message, name: str = node.name, receive: Any = receive) -> None:
            if isinstance(message, be.Heartbeat):
                heard[name].append(h.t)
            receive(message)

        setattr(node, "receive", recording)  # noqa: B010  (a dataclass method, wrapped to record)
    h.advance(3.0, step=0.01)
    for times in heard.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 2, gaps
        assert max(gaps) <= 1.0 + period + 1e-6, gaps
    silent_from = h.t
    nodes[2].online = False
    while h.state.nodes["n2"].state is NodeState.Ready:
        h.advance(0.01, step=0.01)
        assert h.t - silent_from < 3.0 + 2 * period + 0.5, "a silent node was not judged in time"
    assert h.t - silent_from >= 3.0 - 0.01 - 1e-6  # not before the liveness limit
    assert h.state.nodes["n0"].state is NodeState.Ready


def test_a_link_order_scan_reads_only_what_it_finds_and_one_more() -> None:
    """Breaks if a scan for silent links (or links owed a heartbeat) goes back to reading every
    link (a third of an idle session manager at 10,000 nodes), if `strictly` is not kept apart
    (a heartbeat owed at exactly an interval, a silence judged only past the limit), or if
    touching a name does not make it the newest."""
    order = LinkOrder([("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0)])
    assert order.older(4.0, 2.0) == ["a", "b"]
    assert order.older(4.0, 2.0, strictly=True) == ["a"]
    order.touch("a", 5.0)
    order.discard("b")
    assert order.older(4.0, 2.0) == []  # "c" first now, and recent enough: nothing further read
    assert order.older(7.0, 2.0) == ["c", "d", "a"]
    assert "b" not in order
    assert len(order) == 3


def test_silence_is_judged_as_of_the_last_time_every_node_message_was_read() -> None:
    """Breaks if a node is made Unknown while its heartbeat may still wait unread behind a
    backlog (10,000 nodes registering at once made thousands Unknown, each of which then
    registered again; or after a turn of seconds, when every heartbeat of that time waits), or if
    a backend that never empties keeps a silent node Ready for ever (past `drain_timeout`)."""
    h = Harness(heartbeat_interval=1.0, heartbeat_liveness=3, drain_timeout=10.0)
    h.add_node("n1")
    h.ctl.backend_drained(h.now())  # everything read at t=0; then a backlog: nothing read
    h.advance(2.5, heartbeat=lambda node: False)
    h.ctl.backend_drained(h.now())  # read all at 2.5: still within the limit
    h.advance(2.0, heartbeat=lambda node: False)  # t=4.5: silent 4.5 s, but all read only at 2.5
    assert h.node_state("n1") is NodeState.Ready
    h.advance(5.0, heartbeat=lambda node: False)  # t=9.5: all read only at 2.5, 7 s ago
    assert h.node_state("n1") is NodeState.Ready
    h.advance(3.5, heartbeat=lambda node: False)  # t=13: the last full read is a drain_timeout ago
    assert h.node_state("n1") is NodeState.Unknown


def _draining(name: str, deadline: float) -> NodeLink:
    link = NodeLink(name, None, "inc", 1, 0.0)
    link.drain_deadline = deadline
    return link


def test_a_drain_order_reads_only_the_drains_that_ran_out() -> None:
    """Breaks if finding the drains that ran out goes back to reading every Draining link (ten
    times a second, 8% of the loop while thousands of nodes drained after a registration storm),
    if a drain is found before its deadline, twice, or after its node left or drained again to a
    later deadline."""
    links = {name: _draining(name, deadline) for name, deadline in (("c", 3.0), ("a", 1.0), ("b", 1.0), ("d", 9.0))}
    order = DrainOrder(links.values())
    assert order.expired(0.5, links) == []
    assert order.expired(1.0, links) == ["a", "b"]  # by name, at their deadline
    assert order.expired(1.0, links) == []  # each once
    order.discard("c")  # registered again
    links["d"].drain_deadline = 12.0  # silent again after a registration: a later drain
    order.add(links["d"])
    assert order.expired(10.0, links) == []
    assert len(order._heap) == 1  # read up to the first that has not run out
    assert order.expired(12.0, links) == ["d"]
    assert "d" in order
    assert len(order) == 3  # the names stay until their links are closed (discard)


def test_silent_nodes_are_cleaned_up_when_their_drain_runs_out_in_name_order() -> None:
    """Breaks if a node whose drain ran out is cleaned up late (more than a scan period), early,
    or not at all, or if a node that registered again within its drain is cleaned up."""
    h = Harness(heartbeat_interval=1.0, heartbeat_liveness=3, drain_timeout=5.0)
    nodes = [h.add_node(name) for name in ("n2", "n1", "n3")]
    for node in nodes:
        node.online = False
    while h.node_state("n1") is NodeState.Ready:
        h.advance(0.01, step=0.01)
    unknown_at = h.t
    assert [h.node_state(n.name) for n in nodes] == [NodeState.Unknown] * 3
    nodes[2].online = True
    h.reregister(nodes[2])
    h.advance(5.0 - 0.05, step=0.01)
    assert h.node_state("n1") is NodeState.Unknown
    while h.node_state("n1") is NodeState.Unknown:
        h.advance(0.01, step=0.01)
    assert h.t - unknown_at <= 5.0 + 1.0 / SCANS_PER_INTERVAL + 1e-6
    assert [h.node_state(n.name) for n in nodes] == [NodeState.NotReady, NodeState.NotReady, NodeState.Ready]
    assert h.ctl.stats()["node_cleanups_total"] == 2
