"""The shape of the code, from its import graph (grimp, the graph import-linter is built on): no
import circle anywhere in `symattn/` or `analysis/`, nothing below the sweep imports from it, and
only the commands import the analysis that reads what runs and studies recorded; and no module
is over 500 lines."""

from __future__ import annotations

import grimp
import pytest

# The sweep orchestrates runs; a run, the model, the data and tracking sit below it. Above it: the
# commands, the benchmark of what a sweep's cells cost, and the analysis of studies.
ABOVE_THE_SWEEP = (
    "symattn.cli",
    "symattn.tracking.ui",
    "symattn.tracking.ui_view",
    "symattn.bench.cell_overhead",
    "symattn.bench.command",
    "analysis",
)
# The analysis reads runs and studies; only the commands that print or serve it sit above it.
ABOVE_THE_ANALYSIS = (
    "symattn.cli",
    "symattn.tracking.ui",
    "symattn.tracking.ui_view",
    "symattn.sweep.commands",
)


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("symattn", "analysis", exclude_type_checking_imports=True, cache_dir=None)


def _within(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def circles(graph) -> list[list[str]]:
    """Every set of modules that import each other in a circle, each sorted: a module is on a
    circle when a module it imports reaches it back (grimp's `chain_exists`); two are on one
    circle when each reaches the other."""

    def reaches(a: str, b: str) -> bool:
        return graph.chain_exists(importer=a, imported=b, as_packages=False)

    on_circle = sorted(
        m for m in graph.modules if any(reaches(n, m) for n in graph.find_modules_directly_imported_by(m))
    )
    found: list[list[str]] = []
    for m in on_circle:
        if not any(m in circle for circle in found):
            found.append([n for n in on_circle if n == m or (reaches(m, n) and reaches(n, m))])
    return found


def _circle_text(graph, component: list[str]) -> str:
    """One circle of `component`, as a chain of imports from its first module back to it."""
    first = component[0]
    then = next(m for m in component if graph.direct_import_exists(importer=first, imported=m))
    back = graph.find_shortest_chain(importer=then, imported=first, as_packages=False) or (then, first)
    return " -> ".join((first, *back))


def test_no_module_imports_itself_through_others(graph):
    found = circles(graph)
    assert not found, "import circles: " + "; ".join(_circle_text(graph, c) for c in found)


def test_the_circle_finder_finds_a_circle():
    g = grimp.ImportGraph()
    for m in ("p", "p.a", "p.b", "p.c", "p.d"):
        g.add_module(m)
    g.add_import(importer="p.a", imported="p.b")
    g.add_import(importer="p.b", imported="p.c")
    g.add_import(importer="p.c", imported="p.a")
    g.add_import(importer="p.d", imported="p.a")
    assert circles(g) == [["p.a", "p.b", "p.c"]]


def test_nothing_below_the_sweep_imports_from_it(graph):
    climbing = sorted(
        (importer, imported)
        for importer in graph.modules
        if importer.startswith("symattn.") and not _within(importer, ("symattn.sweep", *ABOVE_THE_SWEEP))
        for imported in graph.find_modules_directly_imported_by(importer)
        if _within(imported, ("symattn.sweep",))
    )
    assert not climbing, f"imports of the sweep from below it: {climbing}"


def test_only_the_commands_import_the_analysis(graph):
    climbing = sorted(
        (importer, imported)
        for importer in graph.modules
        if importer.startswith("symattn") and not _within(importer, ABOVE_THE_ANALYSIS)
        for imported in graph.find_modules_directly_imported_by(importer)
        if _within(imported, ("analysis",))
    )
    assert not climbing, f"imports of the analysis from below it: {climbing}"


def test_no_module_is_over_500_lines():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    long = {
        str(path.relative_to(root)): n
        for package in ("symattn", "analysis")
        for path in (root / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 500
    }
    assert not long, f"modules over 500 lines (split them by what they do): {long}"
