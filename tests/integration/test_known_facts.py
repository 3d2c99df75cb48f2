"""Known-facts splits: the questions a model answers right, cut into disjoint forget / retain /
general splits (each source in the same proportions), the rest as ``unknown``; reproducible for
a seed, with the model's answers as provenance. On ``embedded:gpt2``, which was trained on the
embedded TOFU facts, with its general-ability questions as a second source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unpact.cli import main
from unpact.data import PLAIN, load_benchmark, read_records
from unpact.known_facts import KNOWN_SPLITS, UNKNOWN_SPLIT, KnownFactsConfig, build_known_facts
from unpact.models import load_model


def _write(path, items):
    path.write_text(json.dumps([{"question": it.question, "answer": it.answer, "id": str(it.id)} for it in items]))
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kf")
    forget = load_benchmark("embedded:tofu", "forget10").items[:18]
    general = load_benchmark("embedded:general", "qa").items[:12]
    return [_write(folder / "authors.json", forget), _write(folder / "general.json", general)]


@pytest.fixture(scope="module")
def model():
    return load_model("embedded:gpt2")


def test_known_facts_are_disjoint_complete_and_reproducible(model, sources):
    a = build_known_facts(model, sources, PLAIN, KnownFactsConfig(seed=1))
    b = build_known_facts(model, sources, PLAIN, KnownFactsConfig(seed=1))
    c = build_known_facts(model, sources, PLAIN, KnownFactsConfig(seed=2))
    ids = {name: [r["id"] for r in rows] for name, rows in a.splits.items()}
    flat = [i for rows in ids.values() for i in rows]
    assert len(flat) == len(set(flat)) == 30  # disjoint, and every question lands somewhere
    assert a.splits == b.splits  # the same seed: the same splits, answers included
    assert sum(len(a.splits[s]) for s in KNOWN_SPLITS) >= 20, a.counts()  # the model knows its training facts
    assert {r["id"] for s in KNOWN_SPLITS for r in a.splits[s]} == {r["id"] for s in KNOWN_SPLITS for r in c.splits[s]}
    assert [r["id"] for r in a.splits["forget"]] != [r["id"] for r in c.splits["forget"]]  # the seed shuffles
    for s in KNOWN_SPLITS:  # every known split draws from both sources
        assert {r["source"] for r in a.splits[s]} == {"authors.json", "general.json"}, s
        assert all(r["model_rouge_l_recall"] >= 0.9 and r["model_answer"] for r in a.splits[s])
    assert all(r["model_rouge_l_recall"] < 0.9 for r in a.splits[UNKNOWN_SPLIT])


def test_known_facts_command_writes_loadable_splits(sources, tmp_path, capsys):
    out = tmp_path / "facts"
    args = ["known-facts", "--model", "embedded:gpt2", "--out", str(out), "--seed", "0"]
    for s in sources:
        args += ["--source", str(s)]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["forget"] == len(load_benchmark("tofu", "forget", path=str(out)).items)
    assert sum(manifest["known_by_source"].values()) == sum(manifest["counts"][s] for s in KNOWN_SPLITS)
    assert (
        main(
            [
                "known-facts",
                "--model",
                "embedded:gpt2",
                "--out",
                str(tmp_path / "x"),
                "--source",
                str(tmp_path / "missing.json"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "x").exists()


def test_shipped_paraphrases_match_tofu_questions_and_attach(tmp_path):
    from unpact.known_facts import read_paraphrases

    para = read_paraphrases()
    tofu = {
        r["question"]
        for f in ("world_facts_perturbed.json", "real_authors_perturbed.json")
        for r in read_records(Path(__file__).parents[1] / "data" / "tofu" / f)
    }
    assert set(para) == tofu  # one for every TOFU question, each keyed by it verbatim
    assert all(p and p != q for q, p in para.items())
    rows = [{"question": q, "answer": "x", "id": str(i)} for i, q in enumerate(list(para)[:3])]
    (tmp_path / "s.json").write_text(json.dumps(rows))
    cfg = KnownFactsConfig()
    assert cfg.paraphrases and read_paraphrases(cfg.paraphrases)[rows[0]["question"]] == para[rows[0]["question"]]


def test_manifest_names_a_weights_file_by_name_and_hash_not_by_path(tmp_path):
    import hashlib

    from unpact.known_facts import portable_source

    f = tmp_path / "deep" / "model.gguf"
    f.parent.mkdir()
    f.write_bytes(b"weights")
    out = portable_source({"format": "gguf", "file": str(f), "file_type": "MOSTLY_Q4_1"})
    assert out == {
        "format": "gguf",
        "file_type": "MOSTLY_Q4_1",
        "file_name": "model.gguf",
        "sha256": hashlib.sha256(b"weights").hexdigest(),
    }
    assert str(tmp_path) not in str(out)
