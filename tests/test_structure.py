"""The house rules of ``platform/`` that a drawing of it shows (README, "What a run does"): its modules import one
another only downwards through the floors, with no circle; no module is over 500 lines; no algorithm is told apart
by its name.  Read from the source with ``ast`` (lazy imports inside functions count too), nothing is imported.
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# top to bottom, as the README lists them: a module may import its own floor's modules and those below
FLOORS = [
    ["platform.sweep"],
    ["platform.cluster", "platform.console", "platform.results"],
    ["platform.report"],
    ["platform.training"],
    ["platform.evaluation", "platform.search", "platform.compiling", "platform.gpu"],
    ["platform.spec"],
    ["platform.datasets", "platform.envs"],
    ["platform.schema", "platform.history", "platform.health", "platform.checkpoint"],
]


def modules(root: str = ROOT) -> dict[str, str]:
    """``platform.x.y`` -> file, every module of the package but its ``__init__`` shim."""
    out = {}
    for folder, _, files in os.walk(os.path.join(root, "platform")):
        for f in files:
            if f.endswith(".py"):
                name = os.path.relpath(os.path.join(folder, f), root)[:-3].replace(os.sep, ".")
                name = name[:-len(".__init__")] if name.endswith(".__init__") else name
                if name != "platform":
                    out[name] = os.path.join(folder, f)
    return out


def imports(mods: dict[str, str]) -> dict[str, set[str]]:
    """module -> the platform modules it imports (the longest module name an import names)."""
    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges = {}
    for name, path in mods.items():
        targets = set()
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                targets.update(resolve(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets.update(resolve(f"{base}.{a.name}") for a in node.names)
        edges[name] = {t for t in targets if t and t != name}
    return edges


def floor(module: str) -> int:
    for i, names in enumerate(FLOORS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    raise AssertionError(f"{module} is on no floor: add it to FLOORS here and to the README's list")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == "open":
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = "done"

    for u in sorted(edges):
        if u not in state:
            visit(u)
    return found


def test_the_checker_sees_a_circle_and_an_arrow_up():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert floor("platform.datasets.base") > floor("platform.spec") > floor("platform.training")


def test_imports_point_down_without_a_circle():
    mods = modules()
    edges = imports(mods)
    assert "platform.datasets" in edges["platform.spec"] and "platform.schema" in edges["platform.spec"]
    up = [f"{a} -> {b}" for a, targets in sorted(edges.items()) for b in sorted(targets) if floor(b) < floor(a)]
    assert not up, "imports that point up the floors: " + "; ".join(up)
    assert not cycles(edges), cycles(edges)


def test_no_module_over_500_lines():
    long = {name: n for name, path in modules().items() if (n := sum(1 for _ in open(path, encoding="utf-8"))) > 500}
    assert not long, long


# modules whose subject is named algorithms, not what an algorithm can do
NAMES_ARE_THE_SUBJECT = {
    "platform.report.claims": "the talk's claims are about Diffusion-QL and EDP by name (it picks their rows)",
}


def test_no_algorithm_is_told_by_its_name():
    """``x == "dql"`` / ``x in ("bc", ...)`` in platform/: what an algorithm can do is its class's to say."""
    import algorithms

    names = set(algorithms.names())
    found = []
    for module, path in modules().items():
        if module in NAMES_ARE_THE_SUBJECT:
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Compare):
                for side in [node.left, *node.comparators]:
                    for c in ast.walk(side):
                        if isinstance(c, ast.Constant) and c.value in names:
                            found.append(f"{module}:{node.lineno}: {c.value!r}")
    assert not found, found


@pytest.mark.parametrize("source, expected", [
    ("import platform.spec\n", {"platform.spec"}),
    ("from platform import history, spec\n", {"platform.history", "platform.spec"}),
    ("def f():\n    from platform.datasets.base import OfflineDataset\n", {"platform.datasets.base"}),
    ("from platform.report.stats import METRIC\nimport os\n", {"platform.report.stats"}),
])
def test_imports_reads_lazy_and_from_imports(tmp_path, source, expected):
    pkg = tmp_path / "platform"
    for sub in ("", "report", "datasets"):
        (pkg / sub).mkdir(exist_ok=True)
        (pkg / sub / "__init__.py").write_text("")
    for f in ("spec.py", "history.py", "report/stats.py", "datasets/base.py"):
        (pkg / f).write_text("")
    (pkg / "user.py").write_text(source)
    assert imports(modules(str(tmp_path)))["platform.user"] == expected
