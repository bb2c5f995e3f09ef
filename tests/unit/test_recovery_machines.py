"""Every edge of the connection and node tables, legal and illegal (DESIGN 4, RFE384).

The expected tables are written out here by hand, not read from the modules, so a change to a
table must be a change to this file too.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

import pytest

from flamed.core.machines import InvalidTransition, Machine
from flamed.core.machines.connection import CONNECTION, ConnectionTrigger
from flamed.core.machines.node import NODE, NodeTrigger
from protocol.types import ConnectionState, NodeState

C, CT = ConnectionState, ConnectionTrigger
N, NT = NodeState, NodeTrigger

S = TypeVar("S", bound=Enum)
G = TypeVar("G", bound=Enum)

CONNECTION_EXPECTED = {
    (C.Connected, CT.silence): C.Draining,
    (C.Connected, CT.register): C.Connected,
    (C.Connected, CT.goodbye): C.Closed,
    (C.Draining, CT.register): C.Connected,
    (C.Draining, CT.drain_expired): C.Closed,
    (C.Draining, CT.goodbye): C.Closed,
}

NODE_EXPECTED = {
    (N.Ready, NT.connected): N.Ready,
    (N.Ready, NT.silent): N.Unknown,
    (N.Ready, NT.cleaned_up): N.NotReady,  # a goodbye: orderly stop, cleaned up at once
    (N.Unknown, NT.connected): N.Ready,
    (N.Unknown, NT.cleaned_up): N.NotReady,
    (N.NotReady, NT.connected): N.Ready,
}


def _split(
    expected: Mapping[tuple[S, G], S], states: type[S], triggers: type[G]
) -> tuple[list[tuple[S, G, S]], list[tuple[S, G]]]:
    """Every (state, trigger) pair of two enums: the legal ones with their target, the others."""
    edges = list(itertools.product(states, triggers))
    legal = [(s, t, expected[(s, t)]) for s, t in edges if (s, t) in expected]
    illegal = [(s, t) for s, t in edges if (s, t) not in expected]
    return legal, illegal


CONN_LEGAL, CONN_ILLEGAL = _split(CONNECTION_EXPECTED, ConnectionState, ConnectionTrigger)
NODE_LEGAL, NODE_ILLEGAL = _split(NODE_EXPECTED, NodeState, NodeTrigger)


def test_tables_are_exactly_the_expected_ones() -> None:
    """Breaks if an edge is added to or removed from the connection or node table without this specification
    changing too."""
    assert CONNECTION.table == CONNECTION_EXPECTED
    assert NODE.table == NODE_EXPECTED


@pytest.mark.parametrize(("state", "trigger", "target"), CONN_LEGAL, ids=str)
def test_connection_legal_edge(state: ConnectionState, trigger: ConnectionTrigger, target: ConnectionState) -> None:
    """Breaks if a legal connection move is refused or leads to another state than the table says."""
    assert CONNECTION.allows(state, trigger)
    assert CONNECTION.next(state, trigger) is target


@pytest.mark.parametrize(("state", "trigger"), CONN_ILLEGAL, ids=str)
def test_connection_illegal_edge(state: ConnectionState, trigger: ConnectionTrigger) -> None:
    """Breaks if an illegal connection move is allowed instead of raising InvalidTransition."""
    _assert_refused(CONNECTION, state, trigger)


@pytest.mark.parametrize(("state", "trigger", "target"), NODE_LEGAL, ids=str)
def test_node_legal_edge(state: NodeState, trigger: NodeTrigger, target: NodeState) -> None:
    """Breaks if a legal node move is refused or leads to another state than the table says."""
    assert NODE.allows(state, trigger)
    assert NODE.next(state, trigger) is target


@pytest.mark.parametrize(("state", "trigger"), NODE_ILLEGAL, ids=str)
def test_node_illegal_edge(state: NodeState, trigger: NodeTrigger) -> None:
    """Breaks if an illegal node move is allowed instead of raising InvalidTransition."""
    _assert_refused(NODE, state, trigger)


def _assert_refused(machine: Machine[S, G], state: S, trigger: G) -> None:
    assert not machine.allows(state, trigger)
    with pytest.raises(InvalidTransition) as caught:
        machine.next(state, trigger)
    assert caught.value.state == state
    assert caught.value.trigger == trigger
    assert str(state) in str(caught.value)
    assert str(trigger) in str(caught.value)


def test_closed_is_terminal_and_every_trigger_on_it_is_refused() -> None:
    """Breaks if a Closed connection can move again."""
    for trigger in ConnectionTrigger:
        assert not CONNECTION.allows(C.Closed, trigger)


def test_node_can_only_reach_not_ready_through_cleanup_and_leave_it_by_registering() -> None:
    """Breaks if a node becomes NotReady other than by cleanup, or leaves NotReady other than by registering
    again."""
    into = {s for (s, t), target in NODE_EXPECTED.items() if target is N.NotReady}
    assert {t for (s, t), target in NODE_EXPECTED.items() if target is N.NotReady} == {NT.cleaned_up}
    assert into == {N.Ready, N.Unknown}
    assert [t for (s, t) in NODE_EXPECTED if s is N.NotReady] == [NT.connected]
