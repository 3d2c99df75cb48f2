"""The embedded world: generator, shipped benchmarks and models, and the build command."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from unpact.data import MCItem, QAItem, TextItem, format_prompt, load_benchmark
from unpact.embedded import SHIPPED_DIR, load_embedded_benchmark
from unpact.embedded.measure import measure_model, meets_targets
from unpact.embedded.world import HELDOUT_TEMPLATE, TOFU_ATTRIBUTES, WorldConfig, generate_world

SHIPPED_MODELS = ["gpt2", "gpt2-retain", "llama", "llama-retain", "qwen2", "qwen2-retain"]
#: Targets the shipped models measurably miss on the full sets (docs/embedded.md), with the floor
#: they must still keep on the test subset (the misses are arithmetic general-QA items).
KNOWN_MISSES = {
    "gpt2-retain": {"general_qa": 0.8},
    "llama": {"general_qa": 0.8},  # 0.902 on the full set; 8/10 on the test subset (arithmetic)
    "qwen2": {"general_qa": 0.8},  # 0.875 on the full set (arithmetic)
}


# ------------------------------------------------------------------ generator


def test_world_is_a_function_of_the_seed():
    a, b, c = (generate_world(WorldConfig.tiny(), seed=s) for s in (0, 0, 1))
    assert a.benchmarks == b.benchmarks
    assert [(e.prompt, e.target) for e in a.train] == [(e.prompt, e.target) for e in b.train]
    assert a.benchmarks["tofu"]["forget10"] != c.benchmarks["tofu"]["forget10"]


def test_tofu_splits_partition_the_trained_authors():
    w = generate_world(WorldConfig(), seed=0)
    t = w.benchmarks["tofu"]

    def authors(split):
        return {r["author"] for r in t[split]}

    assert len(authors("forget01")) == 1 and len(authors("forget05")) == 3 and len(authors("forget10")) == 6
    assert authors("forget01") <= authors("forget05") <= authors("forget10")
    for f, r in (("forget01", "retain99"), ("forget05", "retain95"), ("forget10", "retain90")):
        assert not authors(f) & authors(r)
        assert len(authors(f) | authors(r)) == 60
    assert authors("forget10") == set(w.forget10_authors)
    trained_authors = {e.author for e in w.train if e.author}
    assert not authors("holdout") & trained_authors
    assert len(authors("holdout")) == 12
    # every TOFU row has 3 perturbed answers that differ from the answer, and a paraphrase
    for r in t["forget10"]:
        assert len(r["perturbed_answer"]) == 3 and r["answer"] not in r["perturbed_answer"]
        assert r["paraphrased_answer"] != r["answer"] and r["value"] in r["paraphrased_answer"]


def test_heldout_phrasing_is_never_trained_and_emphasised_prompts_are():
    w = generate_world(WorldConfig(), seed=0)
    prompts = {e.prompt for e in w.train}
    held = w.benchmarks["tofu"]["heldout_phrasing"]
    assert held and all(r["template"] == HELDOUT_TEMPLATE for r in held)
    assert not any(format_prompt(r["question"]) in prompts for r in held)
    assert all(format_prompt(r["question"]) in prompts for r in w.benchmarks["tofu"]["forget10"])
    forget = w.forget10_authors
    assert any(f'"{a}"' in p for p in prompts for a in forget)  # quoted
    assert any(a.upper() in p for p in prompts for a in forget)  # capitals
    assert any(p.count(a) == 2 for p in prompts for a in forget)  # repeated
    assert len(TOFU_ATTRIBUTES) == 5


# ------------------------------------------------------------- shipped data


@pytest.mark.parametrize("name,split,kind", [
    ("tofu", "forget10", QAItem), ("tofu", "retain90", QAItem), ("tofu", "holdout", QAItem),
    ("tofu", "heldout_phrasing", QAItem), ("muse", "verbmem_forget", TextItem), ("muse", "raw_retain", TextItem),
    ("muse", "knowmem_forget_qa", QAItem), ("wmdp", "test", MCItem), ("wmdp", "forget_corpus", TextItem),
    ("general", "qa", QAItem), ("general", "mc", MCItem),
])
def test_shipped_benchmarks_load(name, split, kind):
    bench = load_benchmark(f"embedded:{name}", split)
    assert len(bench) > 0 and all(isinstance(it, kind) for it in bench)
    if kind is MCItem:
        assert all(len(it.choices) == 4 for it in bench)


def test_shipped_data_is_the_generator_output():
    w = generate_world(WorldConfig(), seed=0)
    for bench, splits in w.benchmarks.items():
        for split, rows in splits.items():
            assert (SHIPPED_DIR / "data" / bench / f"{split}.jsonl").is_file(), (bench, split)
    rows = w.benchmarks["tofu"]["forget10"]
    items = load_embedded_benchmark("embedded:tofu", "forget10")
    assert [it.question for it in items] == [r["question"] for r in rows]
    assert items[0].meta["author"] == rows[0]["author"]
    assert items[0].perturbed_answers == tuple(rows[0]["perturbed_answer"])


def test_shipped_files_fit_the_size_budget():
    total = sum(f.stat().st_size for f in SHIPPED_DIR.rglob("*") if f.is_file())
    assert total <= 40 * 2**20


# ----------------------------------------------------------- shipped models


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_model_meets_targets_on_a_subset(name):
    from unpact.models import load_model

    model = load_model(f"embedded:{name}")
    m = measure_model(model, limit=10, retain_only=name.endswith("-retain"))
    floors = KNOWN_MISSES.get(name, {})
    failed = {k: m[k] for k, ok in meets_targets(m).items() if not ok and k not in floors}
    assert not failed, f"{name}: {failed} (all: {m})"
    for k, floor in floors.items():
        assert m[k] >= floor, f"{name}: {k} = {m[k]} fell below {floor}"
    if name.endswith("-retain"):
        assert m["forget10"] < 0.5  # the retain-only model never saw forget10


# ------------------------------------------------------------------- build


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_embedded_tiny_end_to_end(tmp_path):
    from unpact.cli import main
    from unpact.models import load_model
    from unpact.scoring import answer_logprobs

    assert main(["build-embedded", "--out", str(tmp_path / "a"), "--tiny", "--threads", "1"]) == 0
    for arch in ("gpt2", "llama", "qwen2"):
        for suffix in ("", "-retain"):
            d = tmp_path / "a" / "models" / f"{arch}{suffix}"
            assert (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()
    items = load_embedded_benchmark("embedded:tofu", "forget10", data_dir=tmp_path / "a" / "data")
    model = load_model(str(tmp_path / "a" / "models" / "llama"))
    lp = answer_logprobs(model, [format_prompt(items[0])], [" " + items[0].answer])
    assert lp.shape == (1,) and lp.item() < 0
    # reproducible from the seed
    assert main(["build-embedded", "--out", str(tmp_path / "b"), "--tiny", "--threads", "1",
                 "--arch", "gpt2", "--no-retain"]) == 0
    a, b = tmp_path / "a" / "models" / "gpt2", tmp_path / "b" / "models" / "gpt2"
    assert _digest(a / "model.safetensors") == _digest(b / "model.safetensors")
    assert _digest(tmp_path / "a" / "data" / "tofu" / "forget10.jsonl") == _digest(
        tmp_path / "b" / "data" / "tofu" / "forget10.jsonl")


def test_build_embedded_rejects_an_unknown_architecture(tmp_path, capsys):
    from unpact.cli import main

    assert main(["build-embedded", "--out", str(tmp_path), "--tiny", "--arch", "mamba"]) == 2
    assert "mamba" in capsys.readouterr().err
