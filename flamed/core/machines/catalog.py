"""Every state machine of the core, in the order docs/architecture.md shows them.

The diagrams in docs/architecture.md are generated from these tables (`Machine.mermaid()`, by
scripts/state_diagrams.py) and tests/unit/test_architecture_doc.py checks that the document
shows exactly what the tables say, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from flamed.core.machines import Machine
from flamed.core.machines.connection import CONNECTION
from flamed.core.machines.executor import EXECUTOR
from flamed.core.machines.node import NODE
from flamed.core.machines.session import SESSION
from flamed.core.machines.task import TASK

MACHINES: tuple[Machine[Any, Any], ...] = (TASK, SESSION, EXECUTOR, NODE, CONNECTION)
