"""The repository's layout, each a test that can fail.

- no import cycle among the ``helpers`` modules, function-local imports included;
- chapters 01-07 each hold ``#@save`` cells and their generated module exists;
- no chapter shows code by printing a docstring or ``inspect.getsource``: the code is in the cell.

The cycle search is written here, not in ``helpers``, and is tested on small files of its own
first, so a failure of the real check means the repository moved.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from helpers import lib

ROOT = Path(__file__).resolve().parent.parent
METHOD_CHAPTERS = [c for c in lib.MODULES if "01" <= c[:2] <= "07"]


# ----------------------------------------------------------------------------- import graph


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    """``helpers/smoke/x.py`` -> ("helpers.smoke.x", False); ``helpers/__init__.py`` -> ("helpers", True)."""
    parts = path.relative_to(root).with_suffix("").parts
    return (".".join(parts[:-1]), True) if parts[-1] == "__init__" else (".".join(parts), False)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Ids of the import nodes under ``if TYPE_CHECKING:``: they never run, so they make no cycle."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            imports = (n for stmt in node.body for n in ast.walk(stmt) if isinstance(n, ast.Import | ast.ImportFrom))
            skipped |= {id(n) for n in imports}
    return skipped


def import_graph(root: Path, package: str = "helpers") -> dict[str, dict[str, int]]:
    """``{module: {imported module: line}}`` over the modules of ``root/package`` (subpackages
    included), counting every import the module can execute: at the top, inside functions,
    in ``try`` blocks; not those under ``if TYPE_CHECKING:``. Relative imports are resolved;
    ``from .pkg import name`` imports ``pkg`` and, when it is a module, ``pkg.name``; importing
    ``a.b.c`` imports ``a`` and ``a.b`` too (their ``__init__`` runs first). The line is the
    first import of each."""
    files = {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    modules = {name for name, _ in files}
    graph: dict[str, dict[str, int]] = {}
    for (name, is_package), path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skipped = _type_checking_only(tree)
        edges: dict[str, int] = {}
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:  # "helpers.a.b" also runs "helpers" and "helpers.a"
                parts = target.split(".")
                for k in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:k])
                    if prefix in modules and prefix != name:
                        edges[prefix] = min(edges.get(prefix, node.lineno), node.lineno)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or None when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    """``a (line 12) -> b (line 40) -> a``: where each module imports the next."""
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


# ----------------------------------------------------------------------------- chapters


def chapter_problems(notebooks_dir: Path, helpers_dir: Path, chapters: list[str]) -> list[str]:
    """Chapters without a ``#@save`` cell, and generated modules that are missing or hand-written."""
    problems = []
    for chapter in chapters:
        source = notebooks_dir / f"{chapter}.py"
        if not lib.saved_cells(source.read_text(encoding="utf-8")):
            problems.append(f"notebooks/{chapter}.py has no #@save cell")
        module = helpers_dir / f"{lib.MODULES[chapter]}.py"
        if not module.exists():
            problems.append(f"helpers/{module.name} (from {chapter}) does not exist: run `make lib`")
        elif not lib.is_generated(module):
            problems.append(f"helpers/{module.name} (from {chapter}) is hand-written, not generated")
    return problems


_SHOWS_SOURCE = {"getsource", "getsourcelines", "getsourcefile", "getdoc", "getcomments"}


def source_displays(text: str) -> list[str]:
    """Where a chapter's code shows code or a docstring instead of holding it: ``__doc__``,
    ``inspect.getsource``/``getdoc`` and kin, ``help(...)``, ``pydoc``, or IPython's ``obj??``,
    ``module.obj?``, ``%psource``, ``%pdoc`` (which jupytext comments out in the ``.py``)."""
    found = []
    for node in ast.walk(ast.parse(text)):
        what = None
        if isinstance(node, ast.Attribute) and (node.attr == "__doc__" or node.attr in _SHOWS_SOURCE):
            what = node.attr
        elif isinstance(node, ast.Name) and (node.id in _SHOWS_SOURCE or node.id == "__doc__"):
            what = node.id
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "help":
            what = "help()"
        elif isinstance(node, ast.Import | ast.ImportFrom) and "pydoc" in ast.unparse(node):
            what = "pydoc"
        if what:
            found.append(f"line {node.lineno}: {what}")
    for number, line in enumerate(text.splitlines(), start=1):  # jupytext comments a magic out: "# sp.fn??"
        magic = re.fullmatch(r"#\s*([A-Za-z_][\w.]*)(\?\??)", line.strip())
        if magic and ("." in magic[1] or magic[2] == "??") or re.match(r"#\s*%(psource|pdoc|pinfo2?|pfile)\b",
                                                                       line.strip()):
            found.append(f"line {number}: {line.strip()[1:].strip()}")
    return found


# ----------------------------------------------------------------------------- the checks on toy files


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


TOY = {
    "helpers/__init__.py": '"""pkg"""\n',
    "helpers/io.py": "import json\n",
    "helpers/data.py": "from .io import x\n",
    "helpers/spatial.py": "from . import data\n\ndef f():\n    from .pairs import g\n",
    "helpers/pairs.py": "import helpers.io\n",
    "helpers/smoke/__init__.py": "",
    "helpers/smoke/synthetic.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..spatial import f\n"
                                  "from ..io import atomic\n",
}  # fmt: skip


def test_import_graph_resolves_relative_local_and_package_imports(tmp_path):
    graph = import_graph(_write(tmp_path, TOY))
    assert graph["helpers.data"] == {"helpers": 1, "helpers.io": 1}
    assert graph["helpers.spatial"] == {"helpers": 1, "helpers.data": 1, "helpers.pairs": 4}  # function-local too
    assert graph["helpers.pairs"] == {"helpers": 1, "helpers.io": 1}
    assert graph["helpers.smoke.synthetic"] == {"helpers": 4, "helpers.io": 4}  # not the TYPE_CHECKING import
    assert graph["helpers.io"] == {} and find_cycle(graph) is None


def test_cycle_finder_reports_a_cycle_through_a_function_local_import(tmp_path):
    graph = import_graph(_write(tmp_path, TOY | {"helpers/io.py": "def h():\n    from helpers.spatial import f\n"}))
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) >= 3
    assert "helpers.io" in cycle and "helpers.spatial" in cycle
    assert "helpers.io (line 2) -> helpers.spatial" in describe_cycle(cycle, graph)
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {}}) is None
    assert find_cycle({"a": {"b": 1}, "b": {"a": 3}}) == ["a", "b", "a"]


def test_chapter_check_wants_saved_cells_and_a_generated_module(tmp_path):
    notebooks, helpers = tmp_path / "notebooks", tmp_path / "helpers"
    _write(tmp_path, {"notebooks/01_data.py": "# %%\n#@save\ndef f():\n    return 1\n",
                      "notebooks/02_detection.py": "# %%\ndef g():\n    return 2\n",
                      "helpers/pairs.py": lib.header("01_data") + "def f():\n    return 1\n",
                      "helpers/objects.py": '"""hand-written"""\n'})  # fmt: skip
    assert chapter_problems(notebooks, helpers, ["01_data"]) == []
    assert chapter_problems(notebooks, helpers, ["02_detection"]) == [
        "notebooks/02_detection.py has no #@save cell",
        "helpers/objects.py (from 02_detection) is hand-written, not generated",
    ]
    (helpers / "objects.py").unlink()
    missing = chapter_problems(notebooks, helpers, ["02_detection"])[1]
    assert missing.startswith("helpers/objects.py (from 02_detection) does not exist")


@pytest.mark.parametrize("code", [
    "print(sp.relation_holds.__doc__)", "import inspect\nprint(inspect.getsource(f))", "print(inspect.getdoc(f))",
    "from inspect import getsource\nshow(getsource(f))", "help(sp.relation_holds)", "import pydoc",
    "# %%\n# sp.relation_holds??\n", "# %%\n# relation_holds??\n", "# %%\n# sp.relation_holds?\n",
    "# %%\n# %psource sp.relation_holds\n", "# %%\n# %pdoc sp.relation_holds\n",
])
def test_source_displays_are_found(code):
    assert source_displays(code)


def test_code_in_the_cell_is_not_a_source_display():
    assert source_displays('# %% [markdown]\n# Why?\n\n# %%\n#@save\ndef f(a):\n    """Short."""\n'
                           '    return a  # a comment?\n\n# %%\nf(1)\n') == []


# ----------------------------------------------------------------------------- the repository


def test_helpers_have_no_import_cycle():
    graph = import_graph(ROOT)
    assert {"helpers.lib", "helpers.smoke.synthetic"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {describe_cycle(cycle, graph)}"


def test_chapters_01_to_07_save_their_method_into_generated_modules():
    assert [c[:2] for c in METHOD_CHAPTERS] == ["01", "02", "03", "04", "05", "06", "07"]
    problems = chapter_problems(ROOT / "notebooks", ROOT / "helpers", METHOD_CHAPTERS)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("chapter", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")), ids=lambda p: p.stem)
def test_no_chapter_prints_a_docstring_or_its_source(chapter):
    found = source_displays(chapter.read_text(encoding="utf-8"))
    assert found == [], f"{chapter.name} shows code instead of holding it in a cell: {found}"
