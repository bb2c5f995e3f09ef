"""Regenerate the state diagrams in docs/architecture.md from the core's tables.

Each diagram sits between `<!-- generated: NAME -->` and `<!-- end generated -->`, where NAME is
the machine's name (flamed/core/machines/catalog.py, then flamed/executor_manager/machines.py).
`--check` changes nothing and exits 1 if the document is not what the tables generate
(tests/unit/test_architecture_doc.py checks the same in the test suite).

    .venv/bin/python scripts/state_diagrams.py           # rewrite the diagrams
    .venv/bin/python scripts/state_diagrams.py --check   # exit 1 if they drifted
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from flamed.core.machines.catalog import MACHINES as CORE_MACHINES
from flamed.executor_manager.machines import MACHINES as EM_MACHINES

MACHINES = CORE_MACHINES + EM_MACHINES

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
BLOCK = re.compile(r"(<!-- generated: (?P<name>\w+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL)


def diagram(name: str) -> str:
    """The fenced Mermaid block the table named `name` generates."""
    machine = {m.name: m for m in MACHINES}[name]
    return f"```mermaid\n{machine.mermaid()}\n```\n"


def regenerate(text: str) -> str:
    """`text` with every generated block replaced by what its table generates now."""
    names = [m.group("name") for m in BLOCK.finditer(text)]
    missing = sorted({m.name for m in MACHINES} - set(names))
    if missing:
        raise SystemExit(f"{DOC}: no generated block for {', '.join(missing)}")
    return BLOCK.sub(lambda m: m.group(1) + diagram(m.group("name")) + m.group(4), text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the diagrams drifted; change nothing")
    args = parser.parse_args()
    text = DOC.read_text()
    fresh = regenerate(text)
    if args.check:
        if fresh != text:
            print(f"{DOC}: the state diagrams differ from the tables; run {sys.argv[0]}", file=sys.stderr)
            return 1
        return 0
    if fresh != text:
        DOC.write_text(fresh)
        print(f"{DOC}: diagrams regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
