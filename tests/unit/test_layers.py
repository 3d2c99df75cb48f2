"""Every import goes down the layer table of docs/architecture.md, and the import graph has no cycle.

The checker reads every ``import`` and ``from ... import`` of every module of the package
with :mod:`ast`: at module level and inside functions alike (an import placed inside a
function to dodge a cycle is still a cycle). Only imports guarded by ``if TYPE_CHECKING:``
are left out: they never run. ``hooks/`` is ``unpact.hooks`` and ``analyses/`` is
``unpact.analyses`` (pyproject's package-dir).

The checker is a set of plain functions of (package folders, layer table), so the tests at
the end plant an upward import and a cycle in a temporary package and see it fail.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = {"unpact": ROOT / "unpact", "unpact.hooks": ROOT / "hooks", "unpact.analyses": ROOT / "analyses"}
ARCHITECTURE = ROOT / "docs" / "architecture.md"

#: Cycles allowed for now, as sorted tuples of the modules in them. None: stages names
#: ``pipeline.Study`` only under TYPE_CHECKING, so the pipeline <-> stages pair is not a counted
#: cycle (the audit work restructures both and removes even that).
KNOWN_CYCLES: set[tuple[str, ...]] = set()

#: Optional (or heavy, used by one path) third-party packages a function may import where it
#: uses them, so that ``import unpact.<module>`` stays light and an optional extra stays optional.
#: Everything else (the standard library, numpy, scipy, torch, unpact's own modules) is imported
#: at module level, with the exceptions below.
OPTIONAL_THIRD_PARTY = {
    "ray": "optional extra (unpact[ray]): the grid runs in-process without it",
    "captum": "optional (the test extra): the cross-check of integrated gradients",
    "matplotlib": "drawing only: figures import it when they draw",
    "transformers": "seconds to import: loaded where a model or cache is built",
    "transformer_lens": "seconds to import: loaded where a bridge is booted or a hook name made",
    "accelerate": "the distributed training loop only",
    "datasets": "hub benchmarks only",
    "pyarrow": "parquet benchmark files only",
    "huggingface_hub": "the hub availability check only",
    "tokenizers": "building a tokenizer (embedded world, test checkpoints) only",
    "rouge_score": "ROUGE-L only",
    "rich": "the progress display chosen at run time",
    "tqdm": "the progress display chosen at run time",
    "gguf": "optional extra (unpact[gguf]): GGUF checkpoints only",
}

#: Modules that may import unpact modules and torch inside functions, with the reason.
LAZY_IMPORTERS = {
    "unpact": "`import unpact` exposes load_model/load_benchmark lazily: it must not import torch "
    "before the command line has set the thread policy (unpact.threads)",
    "unpact.cli": "the command line sets the thread policy before anything imports torch, and "
    "`unpact --help` stays fast: each command imports what it runs",
    "unpact.threads": "the thread policy must be set before torch is imported (imports torch only)",
}

#: Modules not checked for imports inside functions (none: every module imports at module level).
PENDING: set[str] = set()


@dataclass(frozen=True)
class Import:
    importer: str  #: the importing module
    target: str  #: the imported module (unpact: the nearest module named; else the top-level package)
    path: Path
    line: int
    in_function: bool
    internal: bool  #: whether target is one of the package's modules


def _shown(path: Path) -> str:
    """A file as the messages show it: from the repository root (else from above its package)."""
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.relative_to(path.parents[1]))


def package_modules(dirs: dict[str, Path]) -> dict[str, tuple[Path, bool]]:
    """``{module name: (file, is a package)}`` for every .py file under the package folders."""
    found: dict[str, tuple[Path, bool]] = {}
    for pkg, folder in dirs.items():
        for f in sorted(folder.rglob("*.py")):
            parts = list(f.relative_to(folder).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            found[".".join([pkg, *parts])] = (f, is_pkg)
    return found


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> tuple[bool, bool]:
    """(inside a function, under ``if TYPE_CHECKING``) for an import node."""
    in_function = type_checking = False
    child, p = node, parents.get(node)
    while p is not None:
        if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function = True
        if isinstance(p, ast.If) and "TYPE_CHECKING" in ast.unparse(p.test) and child in p.body:
            type_checking = True  # the else branch runs
        child, p = p, parents.get(p)
    return in_function, type_checking


def read_imports(modules: dict[str, tuple[Path, bool]]) -> list[Import]:
    """Every import of every module (module level and inside functions; TYPE_CHECKING-guarded left out)."""
    roots = {name.split(".")[0] for name in modules}

    def nearest(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    out: list[Import] = []
    for name, (path, is_pkg) in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            in_function, type_checking = _guarded(node, parents)
            if type_checking:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
            for t in dict.fromkeys(targets):
                if t.split(".")[0] in roots:
                    target = nearest(t)
                    if target is not None and target != name:
                        out.append(Import(name, target, path, node.lineno, in_function, True))
                elif t.split(".")[0] != "__future__":
                    out.append(Import(name, t.split(".")[0], path, node.lineno, in_function, False))
    return out


def read_layer_table(markdown: str) -> list[tuple[str, list[str]]]:
    """``[(layer name, [module entries])]`` bottom to top, from the table under ``## Layers``.

    Rows are ``| number | name | modules | ... |``; module entries are the backticked names of
    the third column. An entry names a module and, for a package, everything in it; the root
    package's entry (``unpact``) names its ``__init__`` only.
    """
    section = markdown.split("\n## Layers", 1)[1].split("\n## ", 1)[0]
    layers = []
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            layers.append((cells[1], re.findall(r"`([\w.]+)`", cells[2])))
    return layers


def layer_of(module: str, layers: list[tuple[str, list[str]]], root: str) -> int | None:
    """Index of the layer whose most specific entry names ``module`` (None: no layer names it)."""
    best, best_len = None, -1
    for i, (_, entries) in enumerate(layers):
        for e in entries:
            hit = module == e or (e != root and module.startswith(e + "."))
            if hit and len(e) > best_len:
                best, best_len = i, len(e)
    return best


def unassigned(modules, layers, root: str) -> list[str]:
    """Modules no layer names."""
    return sorted(m for m in modules if layer_of(m, layers, root) is None)


def upward_imports(imports: list[Import], layers, root: str) -> list[str]:
    """One message per import of a module in a higher layer: file, line, both layers."""
    out = []
    for imp in imports:
        if not imp.internal:
            continue
        lo, hi = layer_of(imp.importer, layers, root), layer_of(imp.target, layers, root)
        if lo is not None and hi is not None and hi > lo:
            where = "inside a function" if imp.in_function else "at module level"
            out.append(
                f"{_shown(imp.path)}:{imp.line}: {imp.importer} "
                f"(layer {lo}, {layers[lo][0]}) imports {imp.target} (layer {hi}, {layers[hi][0]}) {where}"
            )
    return out


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """Every cycle of the module graph (its strongly connected components of two or more modules,
    each given as one closed path through it)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.internal:
            graph.setdefault(imp.importer, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)

    def closed_path(comp: list[str]) -> list[str]:
        inside, start = set(comp), comp[0]
        prev: dict[str, str] = {}
        frontier = [start]
        while frontier:  # breadth first from start, back to start, inside the component
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & inside):
                    if w == start:
                        path = [v]
                        while path[-1] != start:
                            path.append(prev[path[-1]])
                        return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        return comp

    return [closed_path(c) for c in components]


def function_level_violations(imports: list[Import]) -> list[str]:
    """Imports inside functions other than of an optional third-party package, or of unpact and torch
    by a lazy importer."""
    return [
        f"{_shown(imp.path)}:{imp.line}: {imp.importer} imports {imp.target} inside a function"
        for imp in imports
        if imp.in_function
        and imp.importer not in PENDING
        and imp.target not in OPTIONAL_THIRD_PARTY
        and not (imp.importer in LAZY_IMPORTERS and (imp.internal or imp.target == "torch"))
    ]


def private_imports(modules: dict[str, tuple[Path, bool]]) -> list[str]:
    """Uses of another module's private names (``from unpact.x import _y``, ``x._y``)."""
    roots = {name.split(".")[0] for name in modules}
    out = []
    for name, (path, _) in modules.items():
        tree = ast.parse(path.read_text())
        aliases: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in roots):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        out.append(f"{_shown(path)}:{node.lineno}: {name} imports {node.module}.{a.name}")
                    aliases.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                aliases |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] in roots}
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                out.append(f"{_shown(path)}:{node.lineno}: {name} uses {node.value.id}.{node.attr}")
    return out


# ------------------------------------------------------------------ the package


@functools.cache
def _package():
    modules = package_modules(PACKAGE_DIRS)
    return modules, read_imports(modules), read_layer_table(ARCHITECTURE.read_text())


def test_every_module_has_a_layer():
    modules, _, layers = _package()
    assert 8 <= len(layers) <= 14, [name for name, _ in layers]
    missing = unassigned(modules, layers, "unpact")
    assert not missing, "no layer of docs/architecture.md names: " + ", ".join(missing)


def test_imports_go_down_the_layers():
    _, imports, layers = _package()
    found = upward_imports(imports, layers, "unpact")
    assert not found, "imports that go up the layer table:\n" + "\n".join(found)


def test_import_graph_has_no_cycle():
    _, imports, _ = _package()
    cycles = [c for c in import_cycles(imports) if tuple(sorted(set(c))) not in KNOWN_CYCLES]
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_function_level_imports_only_where_needed():
    _, imports, _ = _package()
    found = function_level_violations(imports)
    assert not found, "imports inside functions (move them to module level):\n" + "\n".join(found)


def test_no_private_names_across_modules():
    modules, _, _ = _package()
    found = private_imports(modules)
    assert not found, "private names used across modules:\n" + "\n".join(found)


# ------------------------------------------------------------------ the checker can fail

PLANTED_TABLE = """# t

## Layers

| layer | name | modules | what |
|---|---|---|---|
| 0 | base | `pkg`, `pkg.low` | the bottom |
| 1 | top | `pkg.high`, `pkg.sub` | the top |

## Next
"""


def _planted(tmp_path: Path, files: dict[str, str]):
    folder = tmp_path / "pkg"
    (folder / "sub").mkdir(parents=True)
    for rel, text in {"__init__.py": "", "sub/__init__.py": "", **files}.items():
        (folder / rel).write_text(text)
    modules = package_modules({"pkg": folder})
    return modules, read_imports(modules), read_layer_table(PLANTED_TABLE)


def test_checker_reports_a_planted_upward_import(tmp_path):
    modules, imports, layers = _planted(
        tmp_path,
        {
            "low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.high import H\n\n\n"
            "def f():\n    from pkg.high import g\n    return g()\n",
            "high.py": "from pkg.low import f\n\n\ndef g():\n    return 1\n",
        },
    )
    assert [name for name, _ in layers] == ["base", "top"]
    assert unassigned(modules, layers, "pkg") == []
    found = upward_imports(imports, layers, "pkg")
    print("\n".join(found))
    assert found == ["pkg/low.py:7: pkg.low (layer 0, base) imports pkg.high (layer 1, top) inside a function"]
    assert function_level_violations(imports) == ["pkg/low.py:7: pkg.low imports pkg.high inside a function"]


def test_checker_reports_a_module_with_no_layer(tmp_path):
    modules, _, layers = _planted(tmp_path, {"low.py": "", "high.py": "", "stray.py": "import pkg.low\n"})
    assert unassigned(modules, layers, "pkg") == ["pkg.stray"]


def test_checker_reports_a_planted_cycle(tmp_path):
    _, imports, _ = _planted(
        tmp_path,
        {
            "low.py": "",
            "high.py": "from pkg.sub import b\n",
            "sub/b.py": "from . import c\n",
            "sub/c.py": "def f():\n    from ..high import x\n    return x\n",
        },
    )
    cycles = import_cycles(imports)
    print("\n".join(" -> ".join(c) for c in cycles))
    assert cycles == [["pkg.high", "pkg.sub.b", "pkg.sub.c", "pkg.high"]]


def test_checker_reports_private_names(tmp_path):
    modules, _, _ = _planted(
        tmp_path,
        {
            "low.py": "def _hidden():\n    return 1\n",
            "high.py": "from pkg import low\nfrom pkg.low import _hidden\nlow._hidden()\n",
        },
    )
    assert private_imports(modules) == [
        "pkg/high.py:2: pkg.high imports pkg.low._hidden",
        "pkg/high.py:3: pkg.high uses low._hidden",
    ]
