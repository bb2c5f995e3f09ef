"""State machines as tables (STYLE 2): each module holds one enum of triggers and one table of
legal moves; `Machine.next` applies a trigger or raises `InvalidTransition` naming both.

Callers that handle *peer input* check `allows()` first and refuse or ignore the message;
an `InvalidTransition` escaping is a bug of ours and must be seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from protocol.errors import FlameBaseError

S = TypeVar("S")
T = TypeVar("T")


class InvalidTransition(FlameBaseError):
    def __init__(self, machine: str, state: object, trigger: object) -> None:
        super().__init__(f"{machine}: trigger {trigger!s} is not allowed in state {state!s}")
        self.machine = machine
        self.state = state
        self.trigger = trigger


class Machine(Generic[S, T]):
    def __init__(self, name: str, table: Mapping[tuple[S, T], S]) -> None:
        self.name = name
        self.table = dict(table)

    def next(self, state: S, trigger: T) -> S:
        try:
            return self.table[(state, trigger)]
        except KeyError:
            raise InvalidTransition(self.name, state, trigger) from None

    def allows(self, state: S, trigger: T) -> bool:
        return (state, trigger) in self.table

    def edges(self) -> Iterator[tuple[S, T, S]]:
        for (state, trigger), target in self.table.items():
            yield state, trigger, target

    def mermaid(self) -> str:
        """The table as a Mermaid state diagram (docs are generated from the tables)."""
        lines = ["stateDiagram-v2"]
        lines += [f"    {a} --> {b}: {t}" for a, t, b in self.edges()]
        return "\n".join(lines)
