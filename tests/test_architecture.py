"""The import graph of ``src/inquire``: no cycles, no production module leaning on the test
stand-ins, and a light ``import inquire``.

The graph is read statically with :mod:`ast` from every module, so it also sees imports
inside functions (the lazy imports that keep torch and faiss out of ``import inquire``). The
rules (docs/architecture.md, "Import rules"):

- an edge is any ``import inquire.x`` / ``from inquire.x import y`` anywhere in a module:
  at module level, inside a function (a lazy import still couples two modules, and a cycle
  through one only shows at run time), or under ``if TYPE_CHECKING:`` (two modules that
  name each other's types share a contract that belongs in a third, lower module);
- ``from inquire.pkg import name`` is an edge to ``inquire.pkg.name`` when that is a module,
  else to the package ``inquire.pkg`` (its ``__init__``);
- importing ``inquire.pkg.mod`` is not an edge to ``inquire.pkg``: Python runs the package's
  ``__init__`` first, but counting that would make every package that re-exports its own
  modules a cycle;
- only ``inquire.testing`` itself and ``inquire.demo`` (the demo steps) may import
  ``inquire.testing``, at any level (type-only imports included);
- the same holds one level up: collapsing every module into its top-level package
  (``inquire.eval.feedback`` -> ``inquire.eval``; a top-level module such as ``inquire.run``
  is its own unit, and so is ``inquire`` itself), the packages form no cycle either. Package
  A importing B through one module while B imports A through another is a cycle even when no
  module cycle exists: the two packages cannot be understood, tested or layered apart.
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import inquire

PACKAGE_ROOT = Path(inquire.__file__).resolve().parent
SRC = PACKAGE_ROOT.parent
HEAVY = ("torch", "torchvision", "transformers", "open_clip", "faiss", "fastapi", "ray")
# Packages whose import must stay as light as `import inquire` itself.
LIGHT_PACKAGES = (
    "inquire",
    "inquire.data",
    "inquire.metrics",
    "inquire.run",
    "inquire.eval",
    "inquire.embed",
    "inquire.index",
    "inquire.rerank",
    "inquire.report",
    "inquire.collection",
    "inquire.web",
    "inquire.cli",
)
TESTING = "inquire.testing"
MAY_IMPORT_TESTING = ("inquire.testing", "inquire.demo")
# The front ends, and the packages that may call them (the library never does).
FRONT_ENDS = ("inquire.cli", "inquire.web")
MAY_IMPORT_FRONT_ENDS = (*FRONT_ENDS, "inquire.demo", "inquire.testing", "inquire.__main__")


@dataclass(frozen=True)
class Import:
    """One import statement of ``module`` naming ``target`` (a module of the package)."""

    module: str
    target: str
    line: int
    lazy: bool  # inside a function or method
    type_only: bool  # under `if TYPE_CHECKING:`


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    """``.../inquire/embed/store.py`` -> ``inquire.embed.store``; a package's ``__init__``
    is the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """Every module of the package under ``root``: ``{dotted name: file}``."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, lazy: bool, type_only: bool) -> Iterator[tuple[ast.AST, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, lazy, type_only
        child_lazy = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk_stmt(stmt, child_lazy, True)
            for stmt in child.orelse:
                yield from _walk_stmt(stmt, child_lazy, type_only)
            continue
        yield from _walk(child, child_lazy, type_only)


def _walk_stmt(stmt: ast.stmt, lazy: bool, type_only: bool) -> Iterator[tuple[ast.AST, bool, bool]]:
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        yield stmt, lazy, type_only
    else:
        wrapper = ast.Module(body=[stmt], type_ignores=[])
        yield from _walk(wrapper, lazy, type_only)


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The imports of package modules in ``path`` (module ``module``), resolved to modules."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    out: list[Import] = []
    for node, lazy, type_only in _walk(tree, False, False):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                pkg = ".".join(base + ([node.module] if node.module else []))
            else:
                pkg = node.module or ""
            for alias in node.names:
                sub = f"{pkg}.{alias.name}"
                targets.append(sub if sub in modules else pkg)
        for target in targets:
            # `import inquire.a.b` names the module inquire.a.b; a name inside a module
            # resolves to the longest module prefix.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module:
                out.append(Import(module, target, node.lineno, lazy, type_only))
    return out


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, list[Import]]:
    """``{module: [its imports of other package modules]}`` for every module under ``root``."""
    modules = all_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, list[Import]]) -> list[list[Import]]:
    """One shortest cycle per strongly connected component of the import graph (lazy and
    type-only imports included), as the chain of imports that closes it."""
    edges: dict[str, dict[str, Import]] = {m: {} for m in graph}
    for m, imps in graph.items():
        for imp in imps:  # name each edge by its most binding import: eager, then lazy
            held = edges[m].get(imp.target)
            if held is None or (imp.type_only, imp.lazy) < (held.type_only, held.lazy):
                edges[m][imp.target] = imp
    # Tarjan's strongly connected components, iteratively.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    components.append(sorted(comp))
    cycles = []
    for comp in components:
        members = set(comp)
        best: list[str] | None = None
        for first in comp:  # shortest cycle through any member, by breadth-first search
            prev: dict[str, str] = {}
            frontier = [first]
            found = False
            while frontier and not found:
                nxt_frontier = []
                for node in frontier:
                    for nxt in sorted(edges[node]):
                        if nxt not in members:
                            continue
                        if nxt == first:
                            path = [node]
                            while path[-1] != first:
                                path.append(prev[path[-1]])
                            path.reverse()
                            if best is None or len(path) < len(best):
                                best = path
                            found = True
                            break
                        if nxt not in prev:
                            prev[nxt] = node
                            nxt_frontier.append(nxt)
                    if found:
                        break
                frontier = nxt_frontier
        assert best is not None
        chain = [*best, best[0]]
        cycles.append([edges[a][b] for a, b in itertools.pairwise(chain)])
    return cycles


def describe_cycle(cycle: list[Import]) -> str:
    """``a -> b (a:line 12, lazy) -> a (b:line 3, type-only)``."""
    parts = [cycle[0].module]
    for imp in cycle:
        kind = ", lazy" if imp.lazy else ""
        kind += ", type-only" if imp.type_only else ""
        where = f"line {imp.line}{kind}"
        parts.append(f"{imp.target} ({imp.module}:{where})")
    return " -> ".join(parts)


def package_of(module: str) -> str:
    """The top-level unit a module belongs to: ``inquire.eval.feedback`` -> ``inquire.eval``,
    ``inquire.run`` -> ``inquire.run``, ``inquire`` -> ``inquire``."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, list[Import]]) -> dict[str, list[Import]]:
    """The import graph with every module collapsed into :func:`package_of` it:
    ``{package: [imports of another package]}``. Each import keeps the module and line that
    make it (``Import.module``); ``Import.target`` is the imported package."""
    out: dict[str, list[Import]] = {package_of(m): [] for m in graph}
    for m, imps in graph.items():
        for imp in imps:
            src, dst = package_of(m), package_of(imp.target)
            if src != dst:
                out[src].append(Import(imp.module, dst, imp.line, imp.lazy, imp.type_only))
    return out


def describe_package_cycle(cycle: list[Import]) -> str:
    """``inquire.a -> inquire.b (inquire.a.x:line 3, lazy) -> inquire.a (inquire.b.y:line 9)``:
    the packages, each step with one import that makes it."""
    parts = [package_of(cycle[0].module)]
    for imp in cycle:
        kind = ", lazy" if imp.lazy else ""
        kind += ", type-only" if imp.type_only else ""
        parts.append(f"{imp.target} ({imp.module}:line {imp.line}{kind})")
    return " -> ".join(parts)


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def stand_in_imports(graph: dict[str, list[Import]]) -> list[Import]:
    """Imports of ``inquire.testing`` by modules that may not use it."""

    seen: set[tuple[str, str, int]] = set()
    out = []
    for m, imps in graph.items():
        for imp in imps:
            key = (m, imp.target, imp.line)
            if _within(m, MAY_IMPORT_TESTING) or key in seen:
                continue
            if imp.target == TESTING or imp.target.startswith(TESTING + "."):
                seen.add(key)
                out.append(imp)
    return out


def front_end_imports(graph: dict[str, list[Import]]) -> list[Import]:
    """Imports of ``inquire.cli`` / ``inquire.web`` by library modules."""
    return [
        imp
        for m, imps in graph.items()
        if not _within(m, MAY_IMPORT_FRONT_ENDS)
        for imp in imps
        if _within(imp.target, FRONT_ENDS)
    ]


# ---------------------------------------------------------------------------- the rules


def test_the_package_has_no_import_cycle() -> None:
    cycles = find_cycles(import_graph())
    if cycles:
        pytest.fail(
            "import cycles (break each by moving the shared code down a layer):\n"
            + "\n".join(describe_cycle(c) for c in cycles),
            pytrace=False,
        )


def test_the_packages_have_no_import_cycle() -> None:
    cycles = find_cycles(package_graph(import_graph()))
    if cycles:
        pytest.fail(
            "package import cycles (move what both packages need into a lower package or a "
            "top-level module, e.g. statistics into inquire.stats):\n"
            + "\n".join(describe_package_cycle(c) for c in cycles),
            pytrace=False,
        )


def test_only_demo_and_testing_import_the_test_stand_ins() -> None:
    bad = stand_in_imports(import_graph())
    if bad:
        pytest.fail(
            "production modules import inquire.testing (move the code they need out of "
            "testing, or the module into inquire.demo):\n"
            + "\n".join(f"{i.module}:{i.line} imports {i.target}" for i in bad),
            pytrace=False,
        )


def test_the_library_never_calls_its_front_ends() -> None:
    bad = front_end_imports(import_graph())
    if bad:
        pytest.fail(
            "library modules import the CLI or the web app (the front ends call the library, "
            "not the other way round; move the shared code into the library):\n"
            + "\n".join(f"{i.module}:{i.line} imports {i.target}" for i in bad),
            pytrace=False,
        )


def test_importing_the_library_loads_no_heavy_framework() -> None:
    code = (
        "import importlib, json, sys\n"
        f"out = {{}}\n"
        f"for name in {list(LIGHT_PACKAGES)!r}:\n"
        "    importlib.import_module(name)\n"
        f"    out[name] = [m for m in {list(HEAVY)!r} if m in sys.modules]\n"
        "print(json.dumps(out))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    assert all(v == [] for v in loaded.values()), loaded


# ---------------------------------------------------------------------------- the checker


def _package(tmp: Path, files: dict[str, str]) -> Path:
    root = tmp / "inquire"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_checker_sees_lazy_relative_and_type_only_imports(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "def f():\n    from inquire.b import g\n    return g\n",
            "b.py": "from . import c\n\ndef g():\n    pass\n",
            "c.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from inquire.a import f\n"
                "else:\n    import inquire.d\n"
            ),
            "d.py": "import os\n",
        },
    )
    graph = import_graph(root)
    assert [(i.target, i.lazy, i.type_only) for i in graph["inquire.a"]] == [
        ("inquire.b", True, False)
    ]
    assert [i.target for i in graph["inquire.b"]] == ["inquire.c"]
    assert [(i.target, i.type_only) for i in graph["inquire.c"]] == [
        ("inquire.a", True),
        ("inquire.d", False),
    ]
    (cycle,) = find_cycles(graph)  # a -> b -> c -> a, closed by a type-only import
    assert describe_cycle(cycle) == (
        "inquire.a -> inquire.b (inquire.a:line 2, lazy) -> inquire.c (inquire.b:line 1) "
        "-> inquire.a (inquire.c:line 3, type-only)"
    )
    del graph["inquire.c"][0]
    assert find_cycles(graph) == []


def test_checker_reports_each_cycle_with_its_path(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "x/__init__.py": "from inquire.x.p import run\n",
            "x/p.py": "def run():\n    from inquire.x import r\n    return r\n",
            "x/r.py": "from inquire.x.p import run\n",
            "y.py": "import inquire.z\n",
            "z.py": "from inquire import y\n",
            "ok.py": "import inquire.y\n",
        },
    )
    cycles = find_cycles(import_graph(root))
    described = sorted(describe_cycle(c) for c in cycles)
    assert described == [
        "inquire.x.p -> inquire.x.r (inquire.x.p:line 2, lazy) -> inquire.x.p (inquire.x.r:line 1)",
        "inquire.y -> inquire.z (inquire.y:line 1) -> inquire.y (inquire.z:line 1)",
    ]


def test_checker_sees_package_cycles_that_no_module_cycle_shows(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "run.py": "",
            "eval/__init__.py": "",
            "eval/evaluate.py": "from inquire import run\n",
            "eval/feedback.py": "def f():\n    from inquire.report.stats import ci\n",
            "report/__init__.py": "",
            "report/stats.py": "def ci():\n    pass\n",
            "report/build.py": "from inquire.eval.evaluate import run\n",
        },
    )
    graph = import_graph(root)
    assert find_cycles(graph) == []  # no module imports itself through others
    packages = package_graph(graph)
    assert sorted(packages) == ["inquire", "inquire.eval", "inquire.report", "inquire.run"]
    (cycle,) = find_cycles(packages)
    assert describe_package_cycle(cycle) == (
        "inquire.eval -> inquire.report (inquire.eval.feedback:line 2, lazy) -> inquire.eval "
        "(inquire.report.build:line 1)"
    )
    # Statistics moved below both packages: no cycle left, and eval -> run is no edge back.
    (root / "stats.py").write_text("def ci():\n    pass\n")
    (root / "eval" / "feedback.py").write_text("def f():\n    from inquire.stats import ci\n")
    assert find_cycles(package_graph(import_graph(root))) == []


def test_checker_flags_testing_imports_outside_demo_and_testing(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "testing/__init__.py": "",
            "testing/fakes.py": "from inquire.testing import __name__ as n\n",
            "demo/__init__.py": "from inquire.testing.fakes import n\n",
            "demo/steps.py": "import inquire.testing.fakes\n",
            "web/app.py": "def f():\n    from inquire.testing import fakes\n",
            "report/build.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                "    from inquire.testing.fakes import n\n"
            ),
        },
    )
    bad = stand_in_imports(import_graph(root))
    assert sorted((i.module, i.target) for i in bad) == [
        ("inquire.report.build", "inquire.testing.fakes"),
        ("inquire.web.app", "inquire.testing.fakes"),
    ]


def test_checker_flags_library_imports_of_the_front_ends(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "cli/__init__.py": "from inquire.report import build\n",
            "web/app.py": "import inquire.cli\n",
            "demo/steps.py": "from inquire.cli import __name__ as n\n",
            "report/build.py": "def f():\n    from inquire.web import app\n",
        },
    )
    bad = front_end_imports(import_graph(root))
    assert [(i.module, i.target, i.lazy) for i in bad] == [
        ("inquire.report.build", "inquire.web.app", True)
    ]
