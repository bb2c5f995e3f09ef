"""The drain a restarted session manager gives the nodes it loads (issue 16, hole 1): long
enough for a live executor manager to notice the restart and come back through its reconnect
backoff, so a node that did nothing wrong is not written off and its tasks are not run twice."""

from __future__ import annotations

import logging

import pytest

from flamed.core.controller import Controller
from protocol import frontend as fe
from protocol.types import ApplicationSpec, NodeState
from tests.unit.core_harness import Harness

pytestmark = pytest.mark.timeout(30)


def n1_state(h: Harness) -> NodeState:
    return h.state.nodes["n1"].state


def _restarted(**config: object) -> Harness:
    h = Harness(heartbeat_interval=0.5, heartbeat_liveness=4, **config)
    h.request(fe.RegisterApplication(name="flmping", spec=ApplicationSpec(command="true")))
    node = h.add_node("n1", 2, auto_run=False)
    h.advance(0.5)
    assert h.state.nodes["n1"].state is NodeState.Ready
    h.ctl = Controller(h.ctl.config, h.state, new_id=h.ctl.new_id)
    h.ctl.start(h.now())
    node.online = False  # not heard since the restart
    return h


def test_a_short_drain_is_raised_after_a_restart_to_cover_the_worst_reconnect(caplog: pytest.LogCaptureFixture) -> None:
    """Breaks if a restarted session manager writes off a loaded node after `drain_timeout`
    when that is shorter than the executor manager's detection (2 s) plus its longest
    reconnect wait (5 s): the node would go NotReady and its running tasks run again."""
    with caplog.at_level(logging.INFO, "flamed"):
        h = _restarted(drain_timeout=3.0, reconnect_backoff_max=5.0)
    assert "drain timer 7.0s (drain_timeout 3.0s raised to cover a reconnect" in caplog.text
    h.advance(6.8, step=0.1)
    assert n1_state(h) is NodeState.Unknown
    h.advance(0.4, step=0.1)
    assert n1_state(h) is NodeState.NotReady


def test_a_drain_that_covers_the_reconnect_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    """Breaks if the restart drain is raised when `drain_timeout` already covers the worst
    reconnect (cleanup of a node that never returns would come later than configured)."""
    with caplog.at_level(logging.INFO, "flamed"):
        h = _restarted(drain_timeout=4.0, reconnect_backoff_max=1.0)
    assert "drain timer 4.0s\n" in caplog.text + "\n"
    assert "raised" not in caplog.text
    h.advance(4.2, step=0.1)
    assert h.state.nodes["n1"].state is NodeState.NotReady
