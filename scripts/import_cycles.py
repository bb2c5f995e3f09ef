"""Count import cycles among our modules: the strongly connected components of the import graph.

    .venv/bin/python scripts/import_cycles.py [PACKAGE ...]   (default: protocol flamed tui)

The graph is import-linter's (grimp): every import, including those under TYPE_CHECKING and
inside functions, module by module. A component of more than one module is a cycle; the script
prints each one and exits 1 if there is any. The acyclic contracts in pyproject.toml check
siblings within chosen packages; this counts over everything, as issue 15 asked ("0 cycles").
"""

from __future__ import annotations

import sys

import grimp


def components(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Tarjan's strongly connected components of `graph` restricted to `modules`, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for child in edges:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & modules))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def main(argv: list[str]) -> int:
    packages = argv or ["protocol", "flamed", "tui"]
    graph = grimp.build_graph(*packages)
    modules = set(graph.modules)
    cycles = components(graph, modules)
    print(f"{len(modules)} modules of {', '.join(packages)}: {len(cycles)} import cycles")
    for cycle in cycles:
        print(f"  {len(cycle)} modules: {' <-> '.join(cycle)}")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
