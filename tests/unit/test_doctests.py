"""The docstring examples run with the suite (``--doctest-modules`` in pyproject.toml); every
skipped one says why beside it."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
REASON = "the doctest run skips them"


def _docstrings():
    for folder in ("unpact", "hooks", "analyses"):
        for p in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(p.read_text())
            for node in [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]:
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    yield f"{p.relative_to(ROOT)}:{getattr(node, 'name', '<module>')}", doc


def test_every_skipped_example_says_why():
    missing = [where for where, doc in _docstrings() if "+SKIP" in doc and REASON not in doc]
    assert not missing, f"skipped doctest examples without their reason: {missing}"


def test_the_suite_runs_the_doctests():
    import tomllib

    opts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in opts["addopts"] and {"unpact", "hooks", "analyses"} <= set(opts["testpaths"])
    runnable = sum(doc.count(">>> ") - doc.count("+SKIP") for _, doc in _docstrings())
    assert runnable > 60  # examples that actually run
