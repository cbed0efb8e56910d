"""The module graph has no cycle, type-only imports included (docs/architecture.md).

import-linter's layers contract (`make check`) holds the order between layers; this holds what
it cannot see: no cycle at all, inside a layer or a package too.
"""

from __future__ import annotations

import grimp


def strongly_connected(graph: grimp.ImportGraph, modules: set[str]) -> list[set[str]]:
    """Tarjan's algorithm over the modules' direct imports; components of more than one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(component)

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_including_type_checking_imports() -> None:
    graph = grimp.build_graph("reverbpy", exclude_type_checking_imports=False)
    modules = {m for m in graph.modules if m.startswith("reverbpy")}
    assert len(modules) > 30
    assert strongly_connected(graph, modules) == []


def test_the_check_sees_a_cycle() -> None:
    """The test above would fail on a cycle: the same check on a graph with one added."""
    graph = grimp.build_graph("reverbpy", exclude_type_checking_imports=False)
    graph.add_import(importer="reverbpy.config", imported="reverbpy.hub")
    modules = {m for m in graph.modules if m.startswith("reverbpy")}
    cycles = strongly_connected(graph, modules)
    assert cycles and {"reverbpy.config", "reverbpy.hub"} <= set().union(*cycles)
