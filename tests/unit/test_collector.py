"""The session manager's garbage-collector policy (collector.py), with a fake `gc` module."""

from __future__ import annotations

from typing import Any

from flamed.session_manager.collector import Collector


class FakeGc:
    def __init__(self) -> None:
        self.callbacks: list[Any] = []
        self.calls: list[str] = []

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def collect(self, generation: int) -> None:
        for callback in self.callbacks:
            callback("start", {"generation": generation})
            callback("stop", {"generation": generation, "collected": 0, "uncollectable": 0})


def test_survivors_of_a_full_collection_are_frozen_at_the_turn_end_and_thawed_on_time() -> None:
    """Breaks if a full collection's survivors are not frozen (every full collection walks a
    million held tasks: loop pauses of hundreds of ms), if a younger collection freezes
    (objects not yet judged would be kept from the collector), or if nothing is ever thawed
    (garbage in reference cycles among frozen objects would be kept for ever)."""
    fake = FakeGc()
    collector = Collector(0.0, thaw_every=600.0, collector=fake)
    fake.collect(0)
    fake.collect(1)
    collector.turn_end(1.0)
    assert fake.calls == []
    fake.collect(2)
    assert fake.calls == []  # never inside the collection's callback
    collector.turn_end(2.0)
    assert fake.calls == ["freeze"]
    collector.turn_end(3.0)
    assert fake.calls == ["freeze"]  # once per full collection
    fake.collect(2)
    collector.turn_end(600.0)
    assert fake.calls == ["freeze", "unfreeze"]  # time to thaw: the next full collection walks all
    collector.turn_end(601.0)
    assert fake.calls == ["freeze", "unfreeze"]
    collector.close()
    assert fake.callbacks == []
    assert fake.calls[-1] == "unfreeze"
