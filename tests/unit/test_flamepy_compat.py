"""What a flamepy program meets first: state enums that convert to flamepy's numbers and still
equal this project's values, `ResourceRequirement.from_string`, and an application's shim
honoured by the scheduler (a Wasm application never runs on a Host executor)."""

from __future__ import annotations

import pytest

from flamed import client as flame
from protocol import frontend as fe
from protocol.types import ApplicationSpec, Shim, TaskState
from tests.unit.core_harness import Harness

pytestmark = pytest.mark.timeout(10)


def test_state_enums_convert_to_flamepys_numbers_and_equal_our_values() -> None:
    """flamepy's e2e suite does `int(flamepy.TaskState.FAILED)` at import time to match task
    event codes; a StrEnum without `__int__` raised ValueError."""
    assert [int(s) for s in (flame.TaskState.PENDING, flame.TaskState.RUNNING, flame.TaskState.SUCCEED)] == [0, 1, 2]
    assert int(flame.TaskState.FAILED) == 3
    assert int(flame.TaskState.Cancelled) == 4
    assert int(flame.SessionState.OPEN) == 0
    assert int(flame.SessionState.CLOSED) == 1
    assert int(flame.ApplicationState.DISABLED) == 1
    assert int(flame.Shim.WASM) == 1
    # Looked up by name: mypy takes the alias FAILED for a member of its own, not Failed.
    assert flame.TaskState["FAILED"] == "Failed"
    assert flame.TaskState["FAILED"] is flame.TaskState.Failed
    # flamepy's code builds states from numbers, which a StrEnum's signature does not allow
    # (_Numbered._missing_ maps them): so do these calls, with the type checker told so.
    assert flame.TaskState(3) is flame.TaskState.Failed  # type: ignore[arg-type]  # a number, as flamepy passes
    assert flame.Shim(0) is flame.Shim.Host  # type: ignore[arg-type]  # a number, as flamepy passes
    assert flame.TaskState("Running") is flame.TaskState.RUNNING
    with pytest.raises(ValueError, match="9 is not a valid TaskState"):
        flame.TaskState(9)  # type: ignore[arg-type]  # a number out of range
    with pytest.raises(ValueError, match="True is not a valid TaskState"):
        flame.TaskState(True)  # type: ignore[arg-type]  # a bool is not a state number


def test_resource_requirement_from_string() -> None:
    """Breaks if ResourceRequirement.from_string reads flamepy's strings differently, or accepts a bad one."""
    parsed = flame.ResourceRequirement.from_string("cpu=2, mem=4g, gpu=1")
    assert parsed == flame.ResourceRequirement(cpu=2, memory=4 << 30, gpu=1)
    assert flame.ResourceRequirement.from_string("cpu=3").memory == flame.ResourceRequirement().memory
    for bad in ("", "cpu", "cpu=x", "disk=1"):
        with pytest.raises(ValueError, match=r"bad resource entry|unknown resource"):
            flame.ResourceRequirement.from_string(bad)


def test_a_wasm_application_is_never_bound_to_a_host_executor() -> None:
    """Its tasks stay Pending, as in Flame; a Host session next to it runs. Before, the
    scheduler bound the Wasm session and ran its command."""
    h = Harness()
    node = h.add_node("n1")
    h.request(fe.RegisterApplication(name="wasm", spec=ApplicationSpec(shim=Shim.Wasm, command="/bin/echo")))
    h.request(fe.RegisterApplication(name="host", spec=ApplicationSpec(command="/bin/true")))
    h.session("w", application="wasm")
    h.session("s", application="host")
    h.tasks("w", [b"x"])
    h.tasks("s", [b"y"])
    h.advance(5.0)
    assert h.state.sessions["w"].tasks[0].state is TaskState.Pending
    assert h.state.sessions["s"].tasks[0].state is TaskState.Succeed
    assert set(node.executors.values()) <= {"s", None}
