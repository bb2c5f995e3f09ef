"""Snapshots: the state rebuilt from a snapshot equals the state it was taken of, including
everything later records rely on (pending order, in-flight tasks, reservations, epochs).

What would break: a field `apply` relies on left out of `flamed.core.snapshot`, so a restart
from a snapshot diverges from a restart by replaying the whole log (invariant I8)."""

from __future__ import annotations

import random

import msgspec
import pytest

from flamed.core import records as r
from flamed.core.snapshot import decode_state, encode_state, to_snapshot
from flamed.core.state import ClusterState
from protocol import frontend as fe
from protocol.types import ApplicationSpec
from tests.unit.core_harness import Harness

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(r.AnyRecord)


def canonical(state: ClusterState) -> bytes:
    return _encoder.encode(to_snapshot(state))


def scenario(seed: int) -> Harness:
    """A random-ish life of a cluster: sessions, tasks, failures, node losses, retries."""
    rng = random.Random(seed)
    h = Harness(heartbeat_interval=1.0, heartbeat_liveness=3, drain_timeout=5.0, dispatch_depth=2)
    h.request(fe.RegisterApplication(name="flmping", spec=ApplicationSpec(command="true")))
    nodes = [h.add_node(f"n{i}", slots=rng.randint(1, 3), auto_run=rng.random() < 0.7) for i in range(3)]
    nodes[0].fail_inputs = {b"t3", b"t7"}
    for s in range(rng.randint(2, 4)):
        h.session(f"s{s}")
        h.tasks(f"s{s}", [f"t{i}".encode() for i in range(rng.randint(1, 30))] + [None])
    for _ in range(rng.randint(3, 8)):
        step = rng.random()
        if step < 0.3:
            victim = rng.choice(nodes)
            victim.online = not victim.online
            if victim.online:
                h.reregister(victim)
        elif step < 0.5:  # with an idempotency key: the keys must survive snapshots too
            key = f"k{rng.randint(0, 3)}"
            h.request(fe.CreateTasks(session_id=f"s{rng.randint(0, 1)}", inputs=[rng.randbytes(9)], key=key))
        h.advance(rng.choice([0.5, 2.0, 6.0]))
    return h


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", range(12))
def test_snapshot_round_trip_equals_replay(seed: int) -> None:
    """Breaks if a state restored from a snapshot taken mid-stream, plus the rest of the log, differs from the
    state replayed from the whole log."""
    h = scenario(seed)
    replayed = ClusterState()
    payloads = [_encoder.encode(rec) for rec in h.records]
    cut = random.Random(seed).randint(0, len(payloads))
    for payload in payloads[:cut]:
        replayed.apply(_decoder.decode(payload))
    # Snapshot in the middle of the stream, then the rest of the records on top of it.
    restored = decode_state(encode_state(replayed))
    assert canonical(restored) == canonical(replayed)
    for payload in payloads[cut:]:
        record = _decoder.decode(payload)
        replayed.apply(record)
        restored.apply(record)
    assert canonical(restored) == canonical(h.state)
    assert canonical(replayed) == canonical(h.state)
    for sid, session in h.state.sessions.items():
        assert restored.sessions[sid].counts == session.counts
        assert restored.sessions[sid].batches == session.batches
        assert list(restored.sessions[sid].pending) == list(session.pending)


@pytest.mark.timeout(30)
def test_bad_snapshot_bytes_raise_a_named_error() -> None:
    """Breaks if a snapshot that does not decode raises something else than SnapshotFormatError saying so."""
    from flamed.core.snapshot import SnapshotFormatError

    with pytest.raises(SnapshotFormatError, match="does not decode"):
        decode_state(b"\x93\x01")
