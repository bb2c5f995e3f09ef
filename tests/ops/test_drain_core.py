"""The drained flag in the pure core: a durable record, replayed by the log and carried by
snapshots, answered with the node's view; unknown nodes are a NotFound error."""

from __future__ import annotations

import msgspec

from flamed.core import records as r
from flamed.core.config import CoreConfig
from flamed.core.controller import Controller
from flamed.core.snapshot import decode_state, encode_state
from flamed.core.state import ClusterState
from flamed.core.turn import Now
from protocol import frontend as fe
from protocol.types import NodeInfo, ResourceRequirement

NOW = Now(mono=1.0, wall=1_000)


def _controller() -> Controller:
    ctl = Controller(CoreConfig())
    info = NodeInfo(name="n1", hostname="h", capacity=ResourceRequirement(cpu=2), max_executors=2)
    ctl.commit(r.NodeRegistered(time=1, info=info, incarnation="i", epoch=1))
    ctl.outbox.records.clear()
    return ctl


def _ask(ctl: Controller, request: fe.ClientRequest) -> fe.Message:
    ctl.handle_client(b"peer", request, NOW)
    return ctl.outbox.replies.pop()[1]


def test_drain_is_a_record_that_replays_and_snapshots() -> None:
    """Breaks if draining a node is not durable (one record, replayed and kept in snapshots), a second drain
    writes again, or undrain or the counters do not follow."""
    ctl = _controller()
    reply = _ask(ctl, fe.DrainNode(name="n1"))
    assert isinstance(reply, fe.NodeReply)
    assert reply.node.drained
    assert [type(x) for x in ctl.outbox.records] == [r.NodeDrainChanged]
    _ask(ctl, fe.DrainNode(name="n1"))  # idempotent: no second record
    assert len(ctl.outbox.records) == 1

    encoded = [msgspec.msgpack.encode(x) for x in ctl.outbox.records]
    decoder = msgspec.msgpack.Decoder(r.AnyRecord)
    replayed = ClusterState()
    info = ctl.state.nodes["n1"].info
    replayed.apply(r.NodeRegistered(time=1, info=info, incarnation="i", epoch=1))
    for data in encoded:
        replayed.apply(decoder.decode(data))
    assert replayed.nodes["n1"].drained
    assert decode_state(encode_state(ctl.state)).nodes["n1"].drained

    reply = _ask(ctl, fe.UndrainNode(name="n1"))
    assert isinstance(reply, fe.NodeReply)
    assert not reply.node.drained
    assert not decode_state(encode_state(ctl.state)).nodes["n1"].drained
    assert ctl.counters["node_drains"] == 1
    assert ctl.counters["node_undrains"] == 1


def test_drain_of_an_unknown_node_is_not_found() -> None:
    """Breaks if draining an unknown node is not an error naming it, or still writes a record."""
    ctl = _controller()
    reply = _ask(ctl, fe.DrainNode(name="nope"))
    assert isinstance(reply, fe.Error)
    assert "nope" in reply.message
    assert not ctl.outbox.records
