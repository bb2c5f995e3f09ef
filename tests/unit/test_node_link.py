"""NodeLink: what a checkpoint keeps of a link."""

from __future__ import annotations

from flamed.core.node_link import NodeLink
from protocol import backend as be


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
