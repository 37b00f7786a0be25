"""The import graph of src/rseqlab has no cycles (beyond the ones listed, each with its reason).

Every ``import`` is counted, at module level or inside a function (a deferred import still ties
the two modules together), except under ``if TYPE_CHECKING:`` (never executed). Importing
``a.b.c`` is an edge to that module only: Python initialises the parent packages first, which
no cycle can break.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "rseqlab"

#: Cycles left on purpose: the modules of each strongly connected component, and why. Every
#: edge that closes one is a deferred (function-level) import or a bottom-of-module one.
KNOWN_CYCLES: list[tuple[frozenset[str], str]] = [
    (frozenset({"rseqlab._startup", "rseqlab.errors"}),
     "_startup must import nothing at module level (it runs before the heavy imports); each "
     "asks the other for one name when a signal or an error is reported"),
    (frozenset({"rseqlab.userprog.primitives", "rseqlab.userprog.primitives_arm64"}),
     "the arm64 flavour builds on the x86_64 module's helpers, which dispatch to it; one "
     "module split in two files"),
    (frozenset({"rseqlab.report.plot", "rseqlab.report.progress", "rseqlab.report.selftest"}),
     "the selftest report imports its optional chart and progress views lazily, and they "
     "use its verdict() wording"),
    (frozenset({"rseqlab.trace.build", "rseqlab.trace.format", "rseqlab.trace.perfdata",
                "rseqlab.trace.tracedat"}),
     "format.load() tells trace.dat and perf.data by their magic and hands them to their "
     "readers (deferred imports), which build the same Trace; moving load() out of format "
     "would change some twenty importers"),
    (frozenset({"rseqlab.api", "rseqlab.check", "rseqlab.check.parallel", "rseqlab.compare"}),
     "rseqlab.check and rseqlab.compare are callable modules whose calls are api functions, "
     "and api imports their implementations lazily (check.parallel, which api's check uses, "
     "finds shipped scenarios through the check package)"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every import node, skipping the bodies of ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                # ``from pkg import name``: the submodule pkg.name if there is one, else pkg.
                targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in modules else origin
                           for a in node.names]
            for t in targets:
                while t and t not in modules and "." in t:  # ``import a.b.attr``-like spellings
                    t = t.rsplit(".", 1)[0]
                if t in modules and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(frozenset(comp))
    return out


GRAPH = import_graph()


def test_the_graph_sees_known_imports():
    """The parser resolves relative, deferred and ``from pkg import module`` imports (else the
    cycle tests below would pass on an empty graph)."""
    assert "rseqlab.trace.replaybase" in GRAPH["rseqlab.trace.replay"]  # relative, module level
    assert "rseqlab.trace.fastreplay" in GRAPH["rseqlab.trace.replay"]  # inside a function
    assert "rseqlab.extras" in GRAPH["rseqlab.trace.replay"]  # from .. import extras
    assert "rseqlab.userprog.api" in GRAPH["rseqlab.machine.machine"]
    assert "rseqlab.machine.core" not in GRAPH["rseqlab.userprog.api"]  # only under TYPE_CHECKING


def test_cycle_detection_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("a, b", [
    ("rseqlab.trace.replay", "rseqlab.trace.fastreplay"),
    ("rseqlab.machine.core", "rseqlab.userprog.api"),
    ("rseqlab.machine.machine", "rseqlab.userprog.api"),
])
def test_untangled_modules_stay_untangled(a, b):
    comps = [c for c in cycles(GRAPH) if a in c or b in c]
    assert not comps, f"import cycle through {a} / {b}: {sorted(set().union(*comps))}"


def test_machine_core_imports_no_user_space():
    """The machine proper reaches userprog only through machine/machine.py's hooks."""
    for mod in ("rseqlab.machine.core", "rseqlab.machine.interface", "rseqlab.machine.sim",
                "rseqlab.machine.mmcid", "rseqlab.machine.scripted"):
        assert not {t for t in GRAPH[mod] if t.startswith("rseqlab.userprog")}, mod


def test_userprog_uses_only_the_machine_interface():
    for mod, targets in GRAPH.items():
        if mod.startswith("rseqlab.userprog"):
            bad = {t for t in targets if t.startswith("rseqlab.machine") and t != "rseqlab.machine.interface"}
            assert not bad, f"{mod} imports {sorted(bad)}"


def test_no_import_cycles_beyond_the_known_ones():
    found = set(cycles(GRAPH))
    known = {c for c, _ in KNOWN_CYCLES}
    assert found - known == set(), "new import cycle(s): " + "; ".join(
        " <-> ".join(sorted(c)) for c in found - known)
    assert known - found == set(), "a known cycle is gone: remove it from KNOWN_CYCLES"
