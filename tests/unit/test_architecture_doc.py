"""docs/architecture.md shows the state machines exactly as their tables define them."""

from __future__ import annotations

import re
from pathlib import Path

from flamed.core.machines.catalog import MACHINES as CORE_MACHINES
from flamed.executor_manager.machines import MACHINES as EM_MACHINES

MACHINES = CORE_MACHINES + EM_MACHINES

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
BLOCK = re.compile(
    r"<!-- generated: (?P<name>\w+) -->\n```mermaid\n(?P<body>.*?)```\n<!-- end generated -->", re.DOTALL
)


def test_every_state_diagram_in_the_architecture_doc_is_what_its_table_generates() -> None:
    """Breaks if a table changes and the document still shows the old moves (or the other way
    round): run `.venv/bin/python scripts/state_diagrams.py` to regenerate the diagrams."""
    shown = {m.group("name"): m.group("body") for m in BLOCK.finditer(DOC.read_text())}
    assert sorted(shown) == sorted(m.name for m in MACHINES), "every table has one diagram, and only those"
    for machine in MACHINES:
        assert shown[machine.name] == machine.mermaid() + "\n", f"the {machine.name} diagram drifted from its table"
