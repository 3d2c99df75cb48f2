"""A benchmark split declares its metrics style, its role and whether it is embedded; the metrics
read the declaration, and fall back on the names only where nothing declared them."""

import json

import pytest

from unpact.data import Benchmark, QAItem, load_benchmark
from unpact.data.loaders import SPLIT_ROLES, declared, declared_by_manifest, embedded_benchmark_names
from unpact.data.records import is_embedded, role_of, style_of
from unpact.errors import DataError
from unpact.known_facts import DECLARED
from unpact.metrics import benchmark_style


def _guessed_role(split: str) -> str:
    s = split.lower()
    return "forget" if "forget" in s else "retain" if "retain" in s else "other"


def test_every_declared_role_is_what_the_names_used_to_say():
    """The declarations keep every number as it was: each listed split's role is the one the
    names gave before the splits declared it."""
    for family, roles in SPLIT_ROLES.items():
        for split, role in roles.items():
            assert role == _guessed_role(split), (family, split)


@pytest.mark.parametrize("bench", embedded_benchmark_names())
def test_every_shipped_embedded_split_declares_itself(bench):
    from unpact.data.shipped import DATA_DIR

    for file in sorted((DATA_DIR / bench).glob("*.jsonl")):
        b = load_benchmark(f"embedded:{bench}", file.stem)
        assert b.role is not None and b.style is not None and b.embedded is True, (bench, file.stem)


def test_loaded_splits_carry_the_declaration():
    b = load_benchmark("embedded:muse", "knowmem_forget_qa")
    assert (b.style, b.role, b.embedded) == ("muse", "forget", True)
    assert (b[:2].style, b[:2].role) == ("muse", "forget")  # a slice keeps it
    w = load_benchmark("embedded:wmdp", "test_qa")
    assert (w.style, w.role, benchmark_style(w), is_embedded(w)) == ("wmdp", "other", "wmdp", True)
    assert declared("tofu", "retain90") == {"style": "tofu", "role": "retain", "embedded": False}


def test_the_declaration_wins_over_the_name():
    b = Benchmark(
        "embedded:my-muse-notes", "forget_things", [QAItem("q?", "a")], style="tofu", role="other", embedded=False
    )
    assert (style_of(b), role_of(b), is_embedded(b)) == ("tofu", "other", False)


def test_undeclared_records_fall_back_on_the_names():
    b = Benchmark("my-wmdp-copy", "retain_set", [QAItem("q?", "a")])
    assert (style_of(b), role_of(b), is_embedded(b)) == ("wmdp", "retain", False)
    assert (style_of([]), role_of([], "forget")) == ("tofu", "forget")


def test_a_manifest_declares_a_users_files(tmp_path):
    rows = [{"question": "Where?", "answer": "Lima"}]
    (tmp_path / "set_a.json").write_text(json.dumps(rows))
    (tmp_path / "manifest.json").write_text(json.dumps(DECLARED | {"roles": {"set_a": "forget"}}))
    b = load_benchmark("mine", "set_a", path=tmp_path)
    assert (b.style, b.role, b.embedded) == ("tofu", "forget", None)
    (tmp_path / "manifest.json").write_text(json.dumps({"style": "muse-ish"}))
    with pytest.raises(DataError, match="declares style 'muse-ish'"):
        declared_by_manifest(tmp_path, "set_a")


def test_a_bad_declaration_is_refused():
    with pytest.raises(DataError, match="unknown role 'forgotten'"):
        Benchmark("demo", "x", [], role="forgotten")
