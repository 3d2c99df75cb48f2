"""The embedded world: generator, shipped benchmarks and models, and the build command."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from unpact.data import MCItem, QAItem, TextItem, format_answer, format_prompt, load_benchmark
from unpact.embedded import SHIPPED_DIR, load_embedded_benchmark
from unpact.embedded.measure import measure_model, meets_targets
from unpact.embedded.world import (
    HELDOUT_TEMPLATE,
    TOFU_ATTRIBUTES,
    TRAINED_TEMPLATES,
    WorldConfig,
    generate_world,
)
from unpact.emphasis.rewrites import DEFAULT_TEMPLATES, rewrite

SHIPPED_MODELS = ["gpt2", "gpt2-retain", "llama", "llama-retain", "qwen2", "qwen2-retain"]
ORIGINALS = ["gpt2", "llama", "qwen2"]
#: Targets the shipped models measurably miss on the full sets (docs/embedded.md), with the floor
#: they must still keep on the test subset. Empty: the second edition meets every target.
KNOWN_MISSES: dict[str, dict[str, float]] = {}
#: (template, group) cells of the template table the shipped originals measurably miss, with the floor
#: they must keep on the 3-item test sample. Empty: in the third edition every entity is trained under
#: quote and upper, and the originals answer every trained template at >= 0.9 (docs/embedded.md).
KNOWN_TEMPLATE_MISSES: dict[tuple[str, str], float | None] = {}
#: Items per group in the template test (an evenly spread sample).
TEMPLATE_SAMPLE = 3
#: Largest forget quality (KS p-value) of an original against its -retain twin the test accepts:
#: the twin never saw forget10, so the truth-ratio distributions must differ clearly.
FORGET_QUALITY_MAX = 0.05


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


def test_heldout_phrasing_is_never_trained_and_plain_prompts_are():
    w = generate_world(WorldConfig(), seed=0)
    prompts = {e.prompt for e in w.train}
    held = w.benchmarks["tofu"]["heldout_phrasing"]
    assert held and all(r["template"] == HELDOUT_TEMPLATE for r in held)
    assert not any(format_prompt(r["question"]) in prompts for r in held)
    assert all(format_prompt(r["question"]) in prompts for r in w.benchmarks["tofu"]["forget10"])
    assert len(TOFU_ATTRIBUTES) == 5


def _emphasis_of(prompt: str, question: str, keywords: list[str]) -> set[str]:
    """The trained templates that turn ``question`` into ``prompt`` with these keywords."""
    return {t for t in TRAINED_TEMPLATES if format_prompt(rewrite(question, keywords, t).question) == prompt}


def test_every_trained_template_is_read_for_every_source_on_names_and_single_words():
    w = generate_world(WorldConfig(), seed=0)
    questions = {}
    for bench, split in (
        ("tofu", "retain90"),
        ("tofu", "forget10"),
        ("muse", "knowmem_forget_qa"),
        ("wmdp", "test"),
        ("general", "qa"),
    ):
        for r in w.benchmarks[bench][split]:
            questions[format_prompt(r["question"])] = r
    seen: dict[str, set[tuple[str, str]]] = {}  # source -> {(template, "name" or "word")}
    plain_prompts = set(questions)
    # match each emphasised training prompt to its question via the answer and a rewrite
    by_answer: dict[tuple[str, str], list[dict]] = {}
    for r in questions.values():
        ans = r["answer"] if isinstance(r["answer"], str) else r["choices"][r["answer"]]
        by_answer.setdefault((format_answer(ans)), []).append(r)
    for e in w.train:
        if not e.prompt or e.prompt in plain_prompts:
            continue
        for r in by_answer.get(e.target, []):
            ents = [r["author"]] if "author" in r else list(r.get("keywords") or [r.get("agent")])
            for kind, kws in [("name", [x]) for x in ents] + [("word", [wd]) for x in ents for wd in x.split()]:
                for t in _emphasis_of(e.prompt, r["question"], kws):
                    seen.setdefault(e.source, set()).add((t, kind))
    for source in ("tofu", "muse", "wmdp", "general"):
        templates = {t for t, _ in seen.get(source, set())}
        assert templates == set(TRAINED_TEMPLATES), (source, set(TRAINED_TEMPLATES) - templates)
    assert {t for t, k in seen["tofu"] if k == "word"} == set(TRAINED_TEMPLATES)  # single words of names
    # the held-out surface variants are never trained
    train_text = "\n".join(e.prompt for e in w.train)
    assert "Pay attention to:" not in train_text and "About " not in train_text and "[" not in train_text
    assert not any(f"'{r['author']}'" in train_text for r in w.benchmarks["tofu"]["forget10"])
    assert set(DEFAULT_TEMPLATES) <= set(TRAINED_TEMPLATES)


def test_paraphrases_and_cloze_forms_are_trained_for_every_fact():
    w = generate_world(WorldConfig(), seed=0)
    pairs = {(e.prompt, e.target) for e in w.train}
    targets = {e.target for e in w.train if e.prompt}
    texts = {e.target for e in w.train if not e.prompt}
    t = w.benchmarks["tofu"]
    for r in t["forget10"] + t["retain90"]:
        assert format_answer(r["paraphrased_answer"]) in targets
    for r in w.benchmarks["general"]["qa"]:
        assert len(r["perturbed_answer"]) == 3 and r["answer"] not in r["perturbed_answer"]
        assert (format_prompt(r["question"]), format_answer(r["paraphrased_answer"])) in pairs
    for c in t["cloze"]:
        assert (c["prompt"] + c["gt"] in texts) == c["trained"]
    assert {c["author"] for c in t["cloze"] if not c["trained"]} == {r["author"] for r in t["holdout"]}
    for c in w.benchmarks["general"]["cloze"] + w.benchmarks["muse"]["cloze_forget"]:
        assert c["prompt"] + c["gt"] in texts
    assert not any(c["prompt"] + c["gt"] in texts for c in w.benchmarks["muse"]["cloze_holdout"])


# ------------------------------------------------------------- shipped data


@pytest.mark.parametrize(
    "name,split,kind",
    [
        ("tofu", "forget10", QAItem),
        ("tofu", "retain90", QAItem),
        ("tofu", "holdout", QAItem),
        ("tofu", "heldout_phrasing", QAItem),
        ("muse", "verbmem_forget", TextItem),
        ("muse", "raw_retain", TextItem),
        ("muse", "knowmem_forget_qa", QAItem),
        ("wmdp", "test", MCItem),
        ("wmdp", "forget_corpus", TextItem),
        ("general", "qa", QAItem),
        ("general", "mc", MCItem),
    ],
)
def test_shipped_benchmarks_load(name, split, kind):
    bench = load_benchmark(f"embedded:{name}", split)
    assert len(bench) > 0 and all(isinstance(it, kind) for it in bench)
    if kind is MCItem:
        assert all(len(it.choices) == 4 for it in bench)


def test_shipped_data_is_the_generator_output():
    w = generate_world(WorldConfig(), seed=0)
    for bench, splits in w.benchmarks.items():
        for split in splits:
            assert (SHIPPED_DIR / "data" / bench / f"{split}.jsonl").is_file(), (bench, split)
    rows = w.benchmarks["tofu"]["forget10"]
    items = load_embedded_benchmark("embedded:tofu", "forget10")
    assert [it.question for it in items] == [r["question"] for r in rows]
    assert items[0].meta["author"] == rows[0]["author"]
    assert items[0].perturbed_answers == tuple(rows[0]["perturbed_answer"])


def test_shipped_files_fit_the_size_budget():
    total = sum(f.stat().st_size for f in SHIPPED_DIR.rglob("*") if f.is_file())
    assert total <= 60 * 2**20


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


@pytest.mark.parametrize("name", ORIGINALS)
def test_original_model_reads_every_trained_template(name):
    """A few forget, retain and general items per trained template, keywords the whole name
    and one word of it: the original answers them as it answers the plain prompt."""
    from unpact.embedded.measure import TEMPLATE_TARGET, template_table
    from unpact.models import load_model

    model = load_model(f"embedded:{name}")
    groups = {"forget": ("tofu", "forget10"), "retain": ("tofu", "retain90"), "general": ("general", "qa")}
    table = template_table(model, templates=("none",) + TRAINED_TEMPLATES, limit=TEMPLATE_SAMPLE, groups=groups)
    failed = {}
    for tpl, kinds in table.items():
        for kind, acc in kinds.items():
            for g, a in acc.items():
                floor = KNOWN_TEMPLATE_MISSES.get((tpl, g), TEMPLATE_TARGET)
                if floor is not None and a < floor - 1e-9:
                    failed[(tpl, kind, g)] = a
    assert not failed, f"{name}: {failed}"


@pytest.mark.parametrize("name", ORIGINALS)
def test_original_model_has_tofu_statistics_as_in_tofu(name):
    """Truth ratio on retain items and model utility as TOFU's fine-tuned model has them;
    forget quality against the retain-only twin small (the twin never saw forget10)."""
    from unpact.embedded.measure import TRUTH_RATIO_TARGET, UTILITY_TARGET, tofu_statistics
    from unpact.models import load_model

    model = load_model(f"embedded:{name}")
    twin = load_model(f"embedded:{name}-retain")
    s = tofu_statistics(model, reference=twin, limit=30)
    assert s["retain_truth_ratio"] >= TRUTH_RATIO_TARGET, s
    assert s["model_utility"] > UTILITY_TARGET, s
    assert s["forget_quality"] < FORGET_QUALITY_MAX, s
    t = tofu_statistics(twin, limit=30)
    assert t["forget_truth_ratio"] > s["forget_truth_ratio"], (s, t)  # unknown facts: R nearer 1


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
    assert (
        main(
            [
                "build-embedded",
                "--out",
                str(tmp_path / "b"),
                "--tiny",
                "--threads",
                "1",
                "--arch",
                "gpt2",
                "--no-retain",
            ]
        )
        == 0
    )
    a, b = tmp_path / "a" / "models" / "gpt2", tmp_path / "b" / "models" / "gpt2"
    assert _digest(a / "model.safetensors") == _digest(b / "model.safetensors")
    assert _digest(tmp_path / "a" / "data" / "tofu" / "forget10.jsonl") == _digest(
        tmp_path / "b" / "data" / "tofu" / "forget10.jsonl"
    )


def test_build_embedded_rejects_an_unknown_architecture(tmp_path, capsys):
    from unpact.cli import main

    assert main(["build-embedded", "--out", str(tmp_path), "--tiny", "--arch", "mamba"]) == 2
    assert "mamba" in capsys.readouterr().err


def test_retain_all_twin_never_had_any_forget_set():
    """embedded:gpt2-retain-all, the negative control of MUSE- and WMDP-shaped studies: trained
    without the forget10 authors, the MUSE forget passages and the WMDP hazard domain, it answers
    none of them and still answers what it was trained on (measured on all items: 1.00 / 1.00 /
    1.00 for the retain sets and general QA; 0.00 on each forget set; docs/embedded.md)."""
    from unpact.embedded.measure import CORRECT, qa_rouge
    from unpact.data import load_benchmark, spread_sample
    from unpact.models import embedded_model_names, load_model

    if "gpt2-retain-all" not in embedded_model_names():
        pytest.skip("embedded:gpt2-retain-all is not built (unpact build-embedded --retain-all)")
    model = load_model("embedded:gpt2-retain-all")

    def acc(bench, split):
        r = qa_rouge(model, spread_sample(list(load_benchmark(f"embedded:{bench}", split)), 12))
        return sum(x >= CORRECT for x in r) / len(r)

    for bench, split in [("tofu", "forget10"), ("muse", "knowmem_forget_qa"), ("wmdp", "test_qa")]:
        assert acc(bench, split) <= 0.1, (bench, split)
    for bench, split in [("tofu", "retain90"), ("muse", "knowmem_retain_qa"), ("general", "qa")]:
        assert acc(bench, split) >= 0.9, (bench, split)
